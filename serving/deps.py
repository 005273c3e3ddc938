"""Dependencies as Annotated aliases, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator

from core.contracts.events import safe_id
from serving.errors import ApiError
from serving.rate_limit import Charge, Endpoint
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


def _require(scope: Scope, endpoint: Endpoint, count_here: bool = True):
    """Check the key and its scope, and open the request's rate-limit charge against ``endpoint``
    (:mod:`serving.rate_limit`). ``count_here=False`` for routes that settle the charge themselves:
    in the same Redis round trip as their own reads, or once they know what the request carries."""

    async def check(request: Request, presented: Annotated[str | None, Security(_API_KEY)]) -> Charge:
        state = app_state(request)
        key = state.api_keys.identify(presented)
        if key is None:
            message = "missing X-API-Key header" if not presented else "X-API-Key is not a valid API key"
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "ApiKey"})
        request.state.key_id = key.key_id
        request.state.rate_charge = charge = Charge(key, endpoint)  # the error handler settles it if nothing else does
        if not key.allows(scope):
            raise ApiError(
                403, "forbidden", f"this route needs an API key with scope {scope}; yours has scope {key.scope}"
            )
        if count_here:
            await state.rate_limits.settle(charge)
        return charge

    return check


async def _key(charge: Annotated[Charge, Depends(_require("client", "recommendations"))]) -> ApiKey:
    return charge.key


async def _admin_key(charge: Annotated[Charge, Depends(_require("admin", "admin"))]) -> ApiKey:
    return charge.key


ClientKey = Annotated[ApiKey, Depends(_key)]
AdminKey = Annotated[ApiKey, Depends(_admin_key)]
# for routes that settle the charge themselves (AppState.user_state counts it with the user's reads)
RecommendationCharge = Annotated[Charge, Depends(_require("client", "recommendations", count_here=False))]
# POST /feedback: counted once the body says how many events it carries
FeedbackCharge = Annotated[Charge, Depends(_require("client", "feedback_events", count_here=False))]
UserId = Annotated[
    str,
    Path(description="The user's id: 1-128 letters, digits or _.:@-"),
    AfterValidator(lambda v: safe_id("user_id", v)),
]
