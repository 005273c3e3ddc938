"""Dependencies as Annotated aliases, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator

from core.contracts.events import safe_id
from serving.errors import ApiError
from serving.observability import RATE_LIMITED
from serving.security import ApiKey, Scope
from serving.state import AppState

_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key with scope client (or admin).")


def app_state(request: Request) -> AppState:
    """The state without a dependency: the hot routes call this, one dependency fewer to solve."""
    return request.app.state.echotune


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs plain functions in a thread pool, a hop per request for nothing
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


def rate_limited(state: AppState, key: ApiKey, retry_after: int) -> ApiError:
    RATE_LIMITED.labels(key.key_id).inc()
    return ApiError(
        429, "rate_limited", f"more than {state.settings.rate_limit_per_minute} requests this minute; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )  # fmt: skip


def _require(scope: Scope, count_here: bool = True):
    """Check the key and its scope; ``count_here=False`` for routes that count the request against
    the rate limit themselves, in the same Redis round trip as their own reads."""

    async def check(request: Request, presented: Annotated[str | None, Security(_API_KEY)]) -> ApiKey:
        state = app_state(request)
        key = state.api_keys.identify(presented)
        if key is None:
            message = "missing X-API-Key header" if not presented else "X-API-Key is not a valid API key"
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "ApiKey"})
        request.state.key_id = key.key_id
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"this route needs an API key with scope {scope}; yours has scope {key.scope}")
        if count_here:
            retry_after = await state.over_rate_limit(key)
            if retry_after is not None:
                raise rate_limited(state, key, retry_after)
        return key

    return check


ClientKey = Annotated[ApiKey, Depends(_require("client"))]
# for routes that call AppState.user_state(..., key): the rate limit is counted in that round trip
ClientKeyCountedLater = Annotated[ApiKey, Depends(_require("client", count_here=False))]
AdminKey = Annotated[ApiKey, Depends(_require("admin"))]
UserId = Annotated[
    str, Path(description="The user's id: 1-128 letters, digits or _.:@-"), AfterValidator(lambda v: safe_id("user_id", v))
]
