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
from serving.version_health import open_note

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
        from_client = bool(_REQUEST_ID.match(incoming))
        request_id = incoming if from_client else uuid.uuid4().hex
        scope.setdefault("state", {}).update(request_id=request_id, request_id_from_client=from_client)
        status = 500
        extra_headers = [
            (b"x-request-id", request_id.encode()),
            (b"x-api-version", API_VERSION.encode()),
            *_SECURITY_HEADERS,
        ]
        if not scope["path"].startswith(_DOCS) and not scope["path"].endswith("/report"):
            extra_headers.append(_CSP)

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + extra_headers
            await send(message)

        IN_FLIGHT.inc()
        note = open_note()  # the route names the model version that answered (a canary's health)
        try:
            receive_app = await self._read_body(scope, receive)
            if receive_app is None:
                await self._too_large(send_with_headers, request_id)
            else:
                await self.app(scope, receive_app, send_with_headers)
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUESTS.labels(template, scope["method"], str(status)).inc()
            LATENCY.labels(template).observe(elapsed)
            if status >= 500:
                ERRORS.labels(template).inc()
            state = getattr(getattr(scope.get("app"), "state", None), "echotune", None)
            if "version" in note and state is not None:
                state.version_health.record(note["version"], elapsed, status >= 500)
            if self.log_requests:
                # the route template, not the path: paths carry user ids, which logs must not keep
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "key_id": scope["state"].get("key_id"),
                    },
                )

    async def _read_body(self, scope, receive):
        """The request body read here, up to the limit, and a ``receive`` that hands it to the app; None
        when the body is over the limit. Reading it here means every route answers 413 to an oversized
        body, declared or chunked (a route reading it itself would turn the error into a 400)."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return None
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return _replay([], message, receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return _replay(chunks, None, receive)

    async def _too_large(self, send, request_id: str) -> None:
        body = orjson.dumps(
            {
                "error": {
                    "code": "body_too_large",
                    "message": f"request body is larger than {self.max_body} bytes",
                    "details": [],
                },
                "request_id": request_id,
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(chunks: list[bytes], last: dict | None, receive):
    """A ``receive`` that yields the body read so far as one message (or ``last``), then the real one."""
    pending = [last if last is not None else {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed
