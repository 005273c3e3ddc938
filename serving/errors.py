"""One JSON shape for every error: ``{"error": {"code", "message", "details"}, "request_id"}``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorBody, ErrorDetail, ErrorResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: dict | None = None,
    ):
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details or [], headers


def error_response(request: Request, status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorBody(code=code, message=message, details=details or []),
        request_id=getattr(request.state, "request_id", None),
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def field_of(loc: tuple, default: str = "request") -> str:
    """The field a pydantic error is about ('count', 'user_id', 'events.0.track_id'), without FastAPI's
    'path'/'query'/'body' location prefix; ``default`` when the error is about the whole input."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("path", "query", "body", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) if parts else default


def error_details(
    errors: Iterable[Mapping[str, Any]], index: int | None = None, default_field: str = "request"
) -> list[ErrorDetail]:
    """pydantic's errors (``exc.errors()``) as the API's error details: field and problem, plus the
    item's ``index`` in a batch."""
    return [
        ErrorDetail(
            index=index, field=field_of(e["loc"], default_field), problem=e["msg"].removeprefix("Value error, ")
        )
        for e in errors
    ]


def validation_error(details: list[ErrorDetail], summary: str | None = None) -> ApiError:
    """A 422 whose message names each field and its problem (or ``summary``)."""
    message = summary or "; ".join(f"{d.field}: {d.problem}" for d in details)
    return ApiError(422, "validation_error", message, details)


async def _settle_refused(request: Request) -> ApiError | None:
    """A request refused before its rate-limit charge was counted (a 403, 404 or 422 raised ahead of the
    route's Redis round trip) is counted now, so refused requests cost what answered ones do; the 429
    when that puts its key over the limit (see :mod:`serving.rate_limit`)."""
    charge = getattr(request.state, "rate_charge", None)
    if charge is None or charge.settled:
        return None
    try:
        await request.app.state.echotune.rate_limits.settle(charge)
    except ApiError as limited:
        return limited
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        exc = await _settle_refused(request) or exc
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        error = await _settle_refused(request) or validation_error(error_details(exc.errors()))
        return error_response(request, error.status, error.code, error.message, error.details, error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logging.getLogger("echotune.api").exception(
            "unhandled error", extra={"request_id": getattr(request.state, "request_id", None)}
        )
        return error_response(
            request, 500, "internal_error", "the server failed to answer; the request id identifies it in the logs"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))
