"""Dependencies as Annotated aliases, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import AfterValidator

from echotune.contracts.events import safe_id
from serving.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.echotune


StateDep = Annotated[AppState, Depends(get_state)]
UserId = Annotated[
    str, Path(description="The user's id: 1-128 letters, digits or _.:@-"), AfterValidator(lambda v: safe_id("user_id", v))
]
