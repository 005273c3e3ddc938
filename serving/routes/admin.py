"""Admin routes: GDPR erasure and its receipt."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serving.deps import AdminKey, StateDep, UserId
from serving.erasure import erase_online, receipt_body
from serving.errors import ApiError
from serving.schemas import ErrorResponse
from serving.state import REDIS_ERRORS

router = APIRouter(tags=["admin"])
ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}}


class Removal(BaseModel):
    place: str = Field(
        ...,
        description="Where: redis_online_state, feedback_stream, dead_letters, spool, offline_tables, model_versions.",
    )
    count: int | None = Field(None, description="How many keys, entries, lines, rows or versions (null: not counted).")
    detail: str | None = None
    at: str


class ErasureReceipt(BaseModel):
    user_id: str
    requested_at: str
    removed: list[Removal] = Field(
        ...,
        description="What was removed where, oldest first. The pipeline adds the offline rows and model versions on its next run.",
    )


@router.delete(
    "/users/{user_id}",
    status_code=202,
    response_model=ErasureReceipt,
    responses={**ERRORS, 503: {"model": ErrorResponse}},
)
async def erase_user(user_id: UserId, state: StateDep, key: AdminKey) -> ErasureReceipt:
    """GDPR erasure. Recorded durably first, then the user's online data goes now: vectors of every
    model version, played tracks, online learning state, their events still in the feedback and
    dead-letter streams and in this host's spool. From then on their events are refused. The next
    pipeline run deletes their stored rows and retires model versions trained on them; the receipt
    (``GET /users/{user_id}/erasure``) lists each place."""
    try:
        at = await erase_online(state.redis, state.keys, state.erasure_log, user_id, state.spool, state.clock)
    except REDIS_ERRORS as exc:
        # the request is in the offline log: the next pipeline run (or a retry) finishes the job
        raise ApiError(
            503,
            "redis_unavailable",
            f"the erasure is recorded, but Redis is unavailable ({type(exc).__name__}): retry to remove the online data now",
        ) from exc
    except OSError as exc:
        raise ApiError(
            503,
            "erasure_log_unavailable",
            f"cannot record the erasure durably ({exc.strerror or exc}); nothing was erased: retry",
        ) from exc
    state.erased.add(state.erasure_log.digest(user_id), at)
    return ErasureReceipt(**receipt_body(user_id, state.erasure_log))


@router.get(
    "/users/{user_id}/erasure", response_model=ErasureReceipt, responses={**ERRORS, 404: {"model": ErrorResponse}}
)
async def erasure_receipt(user_id: UserId, state: StateDep, key: AdminKey) -> ErasureReceipt:
    """The receipt of a user's erasure: when it was asked for, and what was removed where (online now,
    offline rows and model versions on the pipeline runs since)."""
    body = receipt_body(user_id, state.erasure_log)
    if body is None:
        raise ApiError(404, "not_erased", f"user {user_id!r} has no erasure on record")
    return ErasureReceipt(**body)
