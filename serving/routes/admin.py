from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serving.deps import AdminKey, StateDep, UserId
from serving.errors import ApiError
from serving.schemas import ErrorResponse
from serving.state import REDIS_ERRORS

router = APIRouter(tags=["admin"])


class Erasure(BaseModel):
    user_id: str
    deleted_keys: int = Field(..., description="Online keys removed now (vectors of every model version, played tracks, online learning state).")
    offline: str = Field(..., description="What happens to the stored events.")


@router.delete("/users/{user_id}", status_code=202, response_model=Erasure,
               responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})  # fmt: skip
async def erase_user(user_id: UserId, state: StateDep, key: AdminKey) -> Erasure:
    """GDPR erasure: the user's online data is deleted now; the erasure is recorded so the pipeline
    deletes their stored events and never trains on them again."""
    keys = state.keys
    try:
        versions = [v.decode() for v in await state.redis.zrange(keys.models_index(), 0, -1)]
        deleted = await state.redis.delete(*keys.user_keys(user_id, versions))
        await state.redis.hset(keys.erased_users(), user_id, str(time.time()))
    except REDIS_ERRORS as exc:
        raise ApiError(503, "redis_unavailable", f"cannot erase while Redis is unavailable ({type(exc).__name__}); retry") from exc
    return Erasure(user_id=user_id, deleted_keys=int(deleted), offline="recorded: the next pipeline run deletes the user's stored events")
