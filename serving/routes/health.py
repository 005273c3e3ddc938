from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from serving.deps import StateDep
from serving.observability import feedback_exposition, metrics_payload
from serving.schemas import Health
from serving.state import REDIS_ERRORS

router = APIRouter(tags=["operations"])


async def _health(state) -> Health:
    try:
        await state.redis.ping()
        redis_status = "ok"
    except REDIS_ERRORS as exc:
        redis_status = f"down: {type(exc).__name__}"
    model = state.models.get()
    ready = redis_status == "ok" and model is not None
    return Health(
        status="ready" if ready else "not_ready",
        redis=redis_status,
        model_version=model.version if model else None,
        algorithm=model.algorithm if model else None,
        models=state.models.loaded(),
    )


@router.get("/health", response_model=Health)
async def health(state: StateDep) -> Health:
    """Liveness: 200 whenever the process answers, with the state of its dependencies."""
    return await _health(state)


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(state: StateDep, response: Response) -> Health:
    """Readiness: 200 when Redis answers and a model is loaded, else 503 (take me out of rotation)."""
    body = await _health(state)
    if body.status != "ready":
        response.status_code = 503
    return body


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition: HTTP rates, latencies and errors, in-flight requests, process memory and
    CPU, recommendations by algorithm and variant, and, from Redis (shared by every API process and
    the worker): feedback accepted / applied / dead-lettered, events per algorithm, variant and type,
    and the click-through rate they imply."""
    payload, content_type = metrics_payload()
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(state.keys.feedback_counters())
            pipe.hgetall(state.keys.feedback_aggregates())
            pipe.xlen(state.keys.feedback_stream())
            counters, aggregates, stream_length = await pipe.execute()
    except REDIS_ERRORS:  # the process metrics are still worth a scrape
        return Response(payload, media_type=content_type)
    spooled = await asyncio.to_thread(state.spool.pending)
    return Response(payload + feedback_exposition(counters, aggregates, stream_length, spooled), media_type=content_type)
