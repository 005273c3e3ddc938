from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from core.redis_clients import is_cluster
from serving.deps import StateDep
from serving.observability import feedback_exposition, metrics_payload, rollout_exposition, spool_exposition
from serving.schemas import Health
from serving.state import REDIS_ERRORS
from serving.worker.counting import ACTIVITY_WINDOWS
from serving.worker.heartbeat import worker_liveness

router = APIRouter(tags=["operations"])


async def _health(state) -> Health:
    worker, aof = None, None
    try:
        heartbeats, aof = await _heartbeats_and_aof(state.redis, state.keys)
        redis_status = "ok"
        worker = worker_liveness(heartbeats, state.clock.now(), state.settings.worker_stale_seconds)
    except REDIS_ERRORS as exc:
        redis_status = f"down: {type(exc).__name__}"
    model = state.models.get()
    # without an append-only file a Redis restart loses accepted feedback not yet drained, online
    # learning and the copy of the erasures: said always, refused when ECHOTUNE_REQUIRE_REDIS_AOF is set
    durable = aof is not False or not state.settings.require_redis_aof
    ready = redis_status == "ok" and model is not None and durable
    return Health(
        status="ready" if ready else "not_ready",
        redis=redis_status,
        redis_aof=aof,
        model_version=model.version if model else None,
        algorithm=model.algorithm if model else None,
        models=state.models.loaded(),
        worker_alive=worker.alive > 0 if worker else None,
        worker_heartbeat_age_seconds=worker.newest_age_seconds if worker else None,
    )


async def _heartbeats_and_aof(client, keys) -> tuple[dict, bool]:
    """The workers' heartbeats and whether Redis keeps an append-only file: one round trip to one server;
    on a cluster, every primary must keep one (each holds a share of the keys)."""
    if is_cluster(client):
        heartbeats = await client.hgetall(keys.worker_heartbeats())
        persistence = await client.info("persistence", target_nodes=client.PRIMARIES)
        return heartbeats, all(int(info.get("aof_enabled", 0)) for info in persistence.values())
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.worker_heartbeats())
        pipe.info("persistence")
        heartbeats, persistence = await pipe.execute()
    return heartbeats, bool(int(persistence.get("aof_enabled", 0)))


@router.get("/health", response_model=Health)
async def health(state: StateDep) -> Health:
    """Liveness: 200 whenever the process answers, with the state of its dependencies."""
    return await _health(state)


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(state: StateDep, response: Response) -> Health:
    """Readiness: 200 when Redis answers and a model is loaded, else 503 (take me out of rotation).
    Also reports whether a feedback worker is alive; no worker does not make the API unready."""
    body = await _health(state)
    if body.status != "ready":
        response.status_code = 503
    return body


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition: HTTP rates, latencies and errors, in-flight requests, memory and CPU of
    every API process, recommendations by algorithm and variant, this host's feedback spool (pending
    events, bytes, cap, quarantine) and, from Redis (shared by every API process and the worker):
    feedback accepted / applied / dead-lettered, events by algorithm, model version, experiment,
    variant and type, the CTR and completion rate by model version and the conversion by experiment
    variant they imply, active users and events per active user in the last hour and day, and the
    workers' heartbeats, the rollout's candidate share and decisions. The feedback worker serves its own figures (lag, pending, rates) itself."""
    payload, content_type = metrics_payload()
    spool = state.spool
    pending, size, quarantined = await asyncio.to_thread(
        lambda: (spool.pending(), spool.size(), spool.quarantined_bytes())
    )
    payload += spool_exposition(pending, size, state.settings.spool_max_bytes, quarantined)
    windows = [(window.name, window.bucket_names(state.clock.now())) for window in ACTIVITY_WINDOWS]
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(state.keys.feedback_counters())
            pipe.hgetall(state.keys.feedback_aggregates())
            pipe.xlen(state.keys.feedback_stream())
            pipe.hgetall(state.keys.worker_heartbeats())
            for _, buckets in windows:
                # spelled out: redis-py's cluster pipeline refuses pfcount() and mget() (their keys share the {fb} slot)
                pipe.execute_command("PFCOUNT", *[state.keys.feedback_active_users(b) for b in buckets])
                pipe.execute_command("MGET", *[state.keys.feedback_active_events(b) for b in buckets])
            pipe.hgetall(state.keys.rollout())
            pipe.hgetall(state.keys.rollout_decision_counts())
            counters, aggregates, stream_length, heartbeats, *activity, rollout, decisions = await pipe.execute()
    except REDIS_ERRORS:  # the process and spool metrics are still worth a scrape
        return Response(payload, media_type=content_type)
    worker = worker_liveness(heartbeats, state.clock.now(), state.settings.worker_stale_seconds)
    engagement = {
        name: (users, sum(int(n) for n in events if n))
        for (name, _), users, events in zip(windows, activity[::2], activity[1::2])
    }
    exposition = feedback_exposition(
        counters, aggregates, stream_length, worker.newest_age_seconds, worker.alive, engagement
    )
    return Response(payload + exposition + rollout_exposition(rollout, decisions), media_type=content_type)
