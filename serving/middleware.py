"""One pure-ASGI middleware for what every request needs: a request id, the body size limit, security
and version headers, metrics and the access log. (Starlette's BaseHTTPMiddleware would add a task and
a stream copy per request; this adds a few dict operations.)"""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson

from serving.observability import ERRORS, IN_FLIGHT, LATENCY, REQUESTS
from serving.schemas import API_VERSION

access_log = logging.getLogger("echotune.access")

_REQUEST_ID = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
_DOCS = ("/docs", "/redoc", "/openapi.json")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cache-control", b"no-store"),
]
# the API serves JSON only: nothing may load, frame or run; the docs pages need their own scripts
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class BodyTooLarge(Exception):
    pass


class RequestContext:
    def __init__(self, app, max_body_bytes: int, log_requests: bool = True) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.log_requests = log_requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        extra_headers = [(b"x-request-id", request_id.encode()), (b"x-api-version", API_VERSION.encode()), *_SECURITY_HEADERS]
        if not scope["path"].startswith(_DOCS) and not scope["path"].endswith("/report"):
            extra_headers.append(_CSP)

        async def send_with_headers(message):
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = list(message.get("headers", [])) + extra_headers
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge()
            return message

        IN_FLIGHT.inc()
        try:
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await self._too_large(send_with_headers, request_id)
            else:
                try:
                    await self.app(scope, limited_receive, send_with_headers)
                except BodyTooLarge:
                    if not response_started:
                        await self._too_large(send_with_headers, request_id)
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUESTS.labels(template, scope["method"], str(status)).inc()
            LATENCY.labels(template).observe(elapsed)
            if status >= 500:
                ERRORS.labels(template).inc()
            if self.log_requests:
                access_log.info(
                    "request",
                    extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": template,
                           "status": status, "duration_ms": round(elapsed * 1000, 3),
                           "key_id": scope["state"].get("key_id")},
                )  # fmt: skip

    async def _too_large(self, send, request_id: str) -> None:
        body = orjson.dumps(
            {"error": {"code": "body_too_large", "message": f"request body is larger than {self.max_body} bytes", "details": []},
             "request_id": request_id}
        )  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
