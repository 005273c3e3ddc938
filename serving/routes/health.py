from __future__ import annotations

import redis
from fastapi import APIRouter

from serving.deps import StateDep
from serving.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
async def health(state: StateDep) -> Health:
    """Liveness, with the state of Redis and the model version being served."""
    try:
        await state.redis.ping()
        redis_status = "ok"
    except (redis.RedisError, OSError) as exc:
        redis_status = f"down: {type(exc).__name__}"
    model = state.models.get()
    return Health(
        status="ok",
        redis=redis_status,
        model_version=model.version if model else None,
        algorithm=model.algorithm if model else None,
    )
