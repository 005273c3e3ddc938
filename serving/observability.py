"""Prometheus metrics and structured JSON logs.

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``echotune serve``) makes every
worker write its samples to files that ``/metrics`` aggregates, so a scrape sees the whole server.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.contracts.events import LABEL

REQUESTS = Counter("echotune_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
ERRORS = Counter("echotune_http_errors_total", "Responses with status >= 500, by route.", ["route"])
LATENCY = Histogram(
    "echotune_http_request_duration_seconds",
    "Time to answer, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)
IN_FLIGHT = Gauge("echotune_http_requests_in_flight", "Requests being answered right now.", multiprocess_mode="livesum")
RECOMMENDATIONS = Counter(
    "echotune_recommendations_served_total", "Recommendation lists served, by algorithm and experiment variant.", ["algorithm", "variant"]
)
DEGRADED = Counter("echotune_recommendations_degraded_total", "Lists served in a fallback mode, by reason.", ["reason"])
SPOOLED = Counter("echotune_feedback_spooled_total", "Feedback events written to the local spool while Redis was unavailable.")
SPOOL_REFUSED = Counter(
    "echotune_feedback_spool_refused_total", "Feedback events refused with 503: Redis unavailable and the spool full or unwritable."
)
SPOOL_QUARANTINED = Counter(
    "echotune_feedback_spool_quarantined_total", "Spool lines that were not event rows (torn writes), moved to the quarantine file."
)
RATE_LIMITED = Counter("echotune_rate_limited_total", "Requests refused with 429, by API key id.", ["key_id"])


def metrics_payload() -> tuple[bytes, str]:
    """The exposition of this process, or of every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


def spool_exposition(pending: int, size_bytes: int, max_bytes: int, quarantined_bytes: int) -> bytes:
    """This host's feedback spool as Prometheus text (read from disk, so also while Redis is down)."""
    families = [
        GaugeMetricFamily("echotune_feedback_spool_pending", "Events in this host's spool, waiting for Redis.", pending),
        GaugeMetricFamily("echotune_feedback_spool_bytes", "Bytes in this host's spool.", size_bytes),
        GaugeMetricFamily("echotune_feedback_spool_max_bytes", "The spool's size cap (ECHOTUNE_SPOOL_MAX_BYTES): 503 beyond it.", max_bytes),
        GaugeMetricFamily("echotune_feedback_spool_quarantine_bytes", "Bytes of torn spool lines kept in the quarantine file.", quarantined_bytes),
    ]
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return generate_latest(registry)


def feedback_exposition(counters: dict, aggregates: dict, stream_length: int, heartbeat_age: float | None, workers_alive: int) -> bytes:
    """Feedback counters and online aggregates (kept in Redis by the API and the worker) and the feedback
    workers' liveness (``heartbeat_age``: seconds since the newest heartbeat, None when there is none)
    as Prometheus text."""

    def value(field: str) -> float:
        return float(counters.get(field.encode(), 0))

    families = [
        CounterMetricFamily("echotune_feedback_events_accepted", "Distinct feedback event ids accepted into the stream.", value("accepted")),
        CounterMetricFamily("echotune_feedback_events_applied", "Distinct feedback event ids whose effect the worker stored.", value("applied")),
        CounterMetricFamily("echotune_feedback_events_dead_lettered", "Stream entries moved to the dead-letter stream.", value("dead_lettered")),
        GaugeMetricFamily("echotune_feedback_stream_length", "Entries in the feedback stream (not yet trimmed).", stream_length),
        GaugeMetricFamily("echotune_feedback_workers_alive", "Feedback workers with a fresh heartbeat (ECHOTUNE_WORKER_STALE_SECONDS).", workers_alive),
    ]
    if heartbeat_age is not None:
        age = GaugeMetricFamily("echotune_feedback_worker_heartbeat_age_seconds", "Seconds since the newest feedback worker heartbeat.", heartbeat_age)
        families.append(age)
    events = CounterMetricFamily("echotune_feedback_events", "Applied events by algorithm, variant and type.", labels=["algorithm", "variant", "type"])
    shown: dict[tuple[str, str], float] = {}
    clicked: dict[tuple[str, str], float] = {}
    for field, count in aggregates.items():
        # stored values are written by our own worker from validated events, but a scrape must never
        # fail on one: a field of another shape (an older version, a hand edit) is skipped, not raised
        parts = field.decode("utf-8", errors="replace").split("|")
        try:
            value = float(count)
        except (TypeError, ValueError):
            continue
        if len(parts) != 3 or not all(LABEL.match(p) for p in parts):
            continue
        algorithm, variant, kind = parts
        events.add_metric([algorithm, variant, kind], value)
        if kind == "recommendation_shown":
            shown[(algorithm, variant)] = value
        elif kind == "recommendation_clicked":
            clicked[(algorithm, variant)] = value
    ctr = GaugeMetricFamily("echotune_recommendation_ctr", "Clicks per recommendation shown.", labels=["algorithm", "variant"])
    for key, n in shown.items():
        if n > 0:
            ctr.add_metric(list(key), clicked.get(key, 0.0) / n)
    registry = CollectorRegistry()
    registry.register(_Fixed([*families, events, ctr]))
    return generate_latest(registry)


class _Fixed:
    """A collector of ready-made metric families."""

    def __init__(self, families: list) -> None:
        self._families = families

    def collect(self):
        return iter(self._families)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
