"""Health: liveness (``/health/live``: the process answers), readiness (``/health/ready``: take traffic)
and ``/health`` (the state of every dependency, always 200).

Readiness stays 200 in degraded mode: with Redis down, a pod that has a model loaded (from Redis or its
disk cache) and a spool it can write still answers recommendations from its cache and takes feedback
into its spool, which is what the spool is for. Taking every pod out of rotation when Redis goes away
(what readiness did before) would have turned a Redis outage into a full API outage. Not ready: no
model loaded, or Redis down and the spool unwritable or full, or Redis up without the append-only file
ECHOTUNE_REQUIRE_REDIS_AOF asks for."""

from __future__ import annotations

import asyncio
import tempfile

from fastapi import APIRouter, Response

from core.redis_clients import is_cluster
from serving.deps import StateDep
from serving.observability import feedback_exposition, metrics_payload, rollout_exposition, spool_exposition
from serving.schemas import Health, Liveness
from serving.spool import Spool
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
    if model is None:
        status = "not_ready"
    elif redis_status == "ok":
        status = "ready" if durable else "not_ready"
    else:  # degraded: serve from the cache, spool feedback, as long as the spool takes it
        spool_ok = await asyncio.to_thread(_spool_takes_feedback, state.spool, state.settings.spool_max_bytes)
        status = "degraded" if spool_ok else "not_ready"
    return Health(
        status=status,
        redis=redis_status,
        redis_aof=aof,
        model_version=model.version if model else None,
        algorithm=model.algorithm if model else None,
        models=state.models.loaded(),
        worker_alive=worker.alive > 0 if worker else None,
        worker_heartbeat_age_seconds=worker.newest_age_seconds if worker else None,
    )


# room the spool must have left to count as taking feedback: a few batches of events (a spooled event
# is a JSON row of ~300-500 bytes)
SPOOL_READY_ROOM_BYTES = 4096


def _spool_takes_feedback(spool: Spool, max_bytes: int) -> bool:
    """Whether this host's spool can take feedback now: SPOOL_READY_ROOM_BYTES below its cap
    (``max_bytes``), and its folder writable (a file created, written and flushed there; a full or
    read-only disk refuses it)."""
    if spool.size() + SPOOL_READY_ROOM_BYTES > max_bytes:
        return False
    try:
        with tempfile.TemporaryFile(dir=spool.folder) as probe:
            probe.write(b"\n")
            probe.flush()
    except OSError:
        return False
    return True


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
    """The state of every dependency (Redis, its append-only file, the models, the workers): 200 whenever
    the process answers."""
    return await _health(state)


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    """Liveness: 200 whenever the process answers; asks no dependency (a Redis outage must not restart pods)."""
    return Liveness(status="alive")


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(state: StateDep, response: Response) -> Health:
    """Readiness: 200 when a model is loaded and either Redis answers (``ready``) or this pod can spool
    feedback while it does not (``degraded``); else 503 (take me out of rotation). No feedback worker
    does not make the API unready: feedback waits in the stream."""
    body = await _health(state)
    if body.status == "not_ready":
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
    spool = state.spool.counts()  # kept by the spool as it writes and replays: a scrape reads no spool file
    payload += spool_exposition(
        spool.pending, spool.size_bytes, state.settings.spool_max_bytes, spool.quarantined_bytes
    )
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
