"""The feedback worker's own Prometheus metrics, and the per-process memory and CPU collector it
shares with the API's ``/metrics``.

Each :class:`~serving.worker.FeedbackWorker` keeps its figures in a registry of its own
(:class:`WorkerMetrics`): counters it increments as it works (events applied, entries, batches and
their duration, dead letters, failed rounds), and figures read at scrape time (:class:`StreamFigures`:
the consumer group's pending entries and lag, the dead-letter stream, its heartbeat's age, the model
version it learns against, its memory and CPU). ``echotune worker`` serves the registry over HTTP on
``ECHOTUNE_WORKER_METRICS_PORT`` (:func:`serve_metrics`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import psutil
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

LAG_COUNT_CAP = 1000  # Redis < 7 does not report a group's lag: entries are counted, up to this many


class WorkerMetrics:
    """The registry of one worker: its counters, plus :class:`StreamFigures` and :class:`ProcessResources`
    read at scrape time. ``worker`` is the :class:`~serving.worker.FeedbackWorker`, ``group`` its
    consumer group."""

    def __init__(self, worker, group: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applied = Counter(
            "echotune_worker_events_applied",
            "Feedback events this worker applied and counted (redeliveries of counted events not again).",
            registry=r,
        )
        self.entries = Counter(
            "echotune_worker_entries",
            "Stream entries this worker handled: applied, already applied, dropped or dead-lettered.",
            registry=r,
        )
        self.batches = Counter(
            "echotune_worker_batches", "Batches of stream entries this worker processed.", registry=r
        )
        self.batch_seconds = Histogram(
            "echotune_worker_batch_duration_seconds",
            "Time to apply, count and acknowledge one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.dead_letters = Counter(
            "echotune_worker_dead_letters", "Stream entries this worker moved to the dead-letter stream.", registry=r
        )
        self.failed_rounds = Counter(
            "echotune_worker_failed_rounds",
            "Rounds that failed (Redis unavailable, or an error) and were retried with backoff.",
            registry=r,
        )
        r.register(StreamFigures(worker, group))
        r.register(ProcessResources())

    def batch_done(self, entries: int, seconds: float) -> None:
        self.batches.inc()
        self.entries.inc(entries)
        self.batch_seconds.observe(seconds)


class StreamFigures:
    """What the worker and its consumer group look like now, read from Redis at each scrape. A scrape
    while Redis is unavailable reports ``echotune_worker_redis_up 0`` and the worker's own figures."""

    def __init__(self, worker, group: str) -> None:
        self.worker, self.group = worker, group

    def collect(self):
        w = self.worker
        age = w.heartbeat.age_seconds()
        if age is not None:
            yield GaugeMetricFamily(
                "echotune_worker_heartbeat_age_seconds",
                "Seconds since this worker last stamped its heartbeat in Redis.",
                age,
            )
        model = GaugeMetricFamily(
            "echotune_worker_model_info",
            "The model version this worker folds events into (value 1).",
            labels=["model_version"],
        )
        if w.served is not None:
            model.add_metric([w.served.version], 1)
        yield model
        try:
            figures = self._read()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: could not read the feedback stream's figures (%s)", exc)
            figures = []
        yield GaugeMetricFamily(
            "echotune_worker_redis_up",
            "1 when this scrape could read the stream's figures from Redis.",
            1 if figures else 0,
        )
        yield from figures

    def _read(self) -> list:
        w = self.worker
        now_ms = int(w.clock.now() * 1000)
        stream = w.keys.feedback_stream()
        pipe = w.r.pipeline(transaction=False)
        pipe.xlen(w.keys.feedback_dead_letters())
        pipe.exists(stream)
        dead, exists = pipe.execute()
        group = None
        if exists:
            group = next((g for g in w.r.xinfo_groups(stream) if _text(g["name"]) == self.group), None)
        families = [
            GaugeMetricFamily(
                "echotune_worker_dead_letter_stream_length",
                "Entries in the dead-letter stream (to replay or drop).",
                dead,
            )
        ]
        if group is None:  # no worker has created the group yet: nothing is pending, everything is lag
            return families
        pending = w.r.xpending(stream, self.group)
        oldest_pending = (now_ms - _ms(_text(pending["min"]))) / 1000 if pending["pending"] else 0.0
        undelivered = w.r.xrange(
            stream,
            min="(" + _text(group["last-delivered-id"]),
            count=1 if group.get("lag") is not None else LAG_COUNT_CAP,
        )
        lag = group["lag"] if group.get("lag") is not None else len(undelivered)
        lag_age = (now_ms - _ms(_text(undelivered[0][0]))) / 1000 if undelivered else 0.0
        return [
            *families,
            GaugeMetricFamily(
                "echotune_worker_pending_entries",
                "Entries delivered to a worker of the group and not acknowledged yet.",
                pending["pending"],
            ),
            GaugeMetricFamily(
                "echotune_worker_oldest_pending_age_seconds",
                "Age of the oldest entry delivered and not acknowledged (0: none).",
                max(0.0, oldest_pending),
            ),
            GaugeMetricFamily(
                "echotune_worker_lag_entries",
                f"Entries in the stream not yet delivered to the group (Redis < 7 does not report it: counted up to {LAG_COUNT_CAP}).",
                lag,
            ),
            GaugeMetricFamily(
                "echotune_worker_lag_seconds",
                "Age of the oldest entry not yet delivered to the group (0: none).",
                max(0.0, lag_age),
            ),
        ]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(stream_id: str) -> int:
    return int(stream_id.split("-")[0])


class ProcessResources:
    """Resident memory and CPU time per process (label ``pid``), read with psutil at scrape time: of this
    process, and with ``multiproc_dir`` (the API's ``PROMETHEUS_MULTIPROC_DIR`` with several uvicorn
    workers, where prometheus_client's own process collector reports nothing) of every live sibling
    worker that writes files there. The live-gauge files of workers that died (uvicorn replaces them
    under new pids) are removed as ``multiprocess.mark_process_dead`` does, so a dead worker's
    in-flight requests stop counting."""

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        self.multiproc_dir = multiproc_dir

    def collect(self):
        memory = GaugeMetricFamily(
            "echotune_process_resident_memory_bytes", "Resident memory of each process, by pid.", labels=["pid"]
        )
        cpu = CounterMetricFamily(
            "echotune_process_cpu_seconds", "User and system CPU time of each process, by pid.", labels=["pid"]
        )
        for pid in self._pids():
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    rss, times = process.memory_info().rss, process.cpu_times()
            except psutil.Error:  # exited since it was listed
                continue
            memory.add_metric([str(pid)], rss)
            cpu.add_metric([str(pid)], times.user + times.system)
        yield memory
        yield cpu
        yield GaugeMetricFamily(
            "echotune_memory_limit_bytes",
            "The memory this process's container may use (its cgroup's limit, else the host's memory).",
            memory_limit_bytes(),
        )

    def _pids(self) -> list[int]:
        me = os.getpid()
        if self.multiproc_dir is None:
            return [me]
        pids = {me}
        for pid in {_pid_of(f.name) for f in self.multiproc_dir.glob("*.db")} - {me, None}:
            if _is_sibling(pid):
                pids.add(pid)
            else:
                multiprocess.mark_process_dead(pid, str(self.multiproc_dir))
        return sorted(pids)


# cgroup v2, then v1: where a container runtime (Docker, Kubernetes) writes the container's memory limit
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_bytes(candidates: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> int:
    """The memory limit of this process's container: the first cgroup limit in ``candidates`` that is
    set, capped at the host's memory ("max" or v1's huge sentinel mean unlimited). The memory alert
    compares the processes' resident memory with it (the ADR: above 80% for 10 minutes)."""
    host = int(psutil.virtual_memory().total)
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), host)
    return host


def _pid_of(filename: str) -> int | None:
    """The pid in a prometheus_client multiprocess file name (``counter_123.db``, ``gauge_livesum_123.db``)."""
    tail = filename.removesuffix(".db").rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _is_sibling(pid: int) -> bool:
    """Whether ``pid`` is alive and a worker of the same server (same parent): a dead worker's pid may
    have been taken by an unrelated process since."""
    try:
        return psutil.Process(pid).ppid() == os.getppid()
    except psutil.Error:
        return False


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer | None:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread. Returns the server (stop
    it with ``shutdown()``), or None when ``port`` is 0 (off) or cannot be bound: that is logged and the
    worker goes on learning without its metrics (the "no worker scrape" alert says so)."""
    if port == 0:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error(
            "cannot serve worker metrics on %s:%d (%s): give each worker on a host its own port "
            "(echotune worker --metrics-port, ECHOTUNE_WORKER_METRICS_PORT) or 0 to turn them off",
            host,
            port,
            exc.strerror,
        )
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    return server
