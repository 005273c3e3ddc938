"""Prometheus metrics and structured JSON logs.

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``echotune serve``) makes every
worker write its samples to files that ``/metrics`` aggregates, so a scrape sees the whole server;
memory and CPU are read per process at scrape time (:class:`ProcessResources`). Figures kept in Redis
by the API and the feedback worker (counters, online aggregates, active users) are turned into
Prometheus text on each scrape (:func:`feedback_exposition`): nothing is added to the request path.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.worker.counting import NO_LABEL, aggregate_parts
from serving.worker.metrics import ProcessResources

REQUESTS = Counter(
    "echotune_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"]
)
ERRORS = Counter("echotune_http_errors_total", "Responses with status >= 500, by route.", ["route"])
LATENCY = Histogram(
    "echotune_http_request_duration_seconds",
    "Time to answer, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)
# the ADR's budgets below the request: feature lookup (P95 50 ms) and experiment assignment (P95 10 ms)
STAGE_LATENCY = Histogram(
    "echotune_stage_duration_seconds",
    "Time spent in one stage of answering, by stage: feature_lookup (the user's vectors and played tracks from Redis), "
    "experiment_assignment (the running experiment and variant of a request).",
    ["stage"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
# per model version, for a canary's health (ECHOTUNE_ROLLOUT): versions are few (ECHOTUNE_KEEP_VERSIONS and aliases)
VERSION_LATENCY = Histogram(
    "echotune_model_request_duration_seconds",
    "Time to answer a recommendation request, by the model version that answered it.",
    ["model_version"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5),
)
VERSION_ERRORS = Counter(
    "echotune_model_request_errors_total",
    "Recommendation answers with status >= 500, by the model version that was answering.",
    ["model_version"],
)
IN_FLIGHT = Gauge("echotune_http_requests_in_flight", "Requests being answered right now.", multiprocess_mode="livesum")
RECOMMENDATIONS = Counter(
    "echotune_recommendations_served_total",
    "Recommendation lists served, by algorithm and experiment variant.",
    ["algorithm", "variant"],
)
DEGRADED = Counter("echotune_recommendations_degraded_total", "Lists served in a fallback mode, by reason.", ["reason"])
EXPOSURES_LOST = Counter(
    "echotune_exposures_lost_total",
    "Served lists whose exposure was not recorded, by reason (buffer_full, stream_full, redis_error).",
    ["reason"],
)
SPOOLED = Counter(
    "echotune_feedback_spooled_total", "Feedback events written to the local spool while Redis was unavailable."
)
SPOOL_REFUSED = Counter(
    "echotune_feedback_spool_refused_total",
    "Feedback events refused with 503: Redis unavailable and the spool full or unwritable.",
)
SPOOL_QUARANTINED = Counter(
    "echotune_feedback_spool_quarantined_total",
    "Spool lines that were not event rows (torn writes), moved to the quarantine file.",
)
SPOOL_DROPPED_ERASED = Counter(
    "echotune_feedback_spool_dropped_erased_total",
    "Spooled feedback events dropped at replay: their user was erased after they were spooled.",
)
TOKENS_IGNORED = Counter(
    "echotune_feedback_tokens_ignored_total",
    "Feedback events whose request token did not hold, counted as if they had none, by reason "
    "(expired, unknown_key, signature, shape, other_user, track_not_in_list).",
    ["reason"],
)
RATE_LIMITED = Counter(
    "echotune_rate_limited_total",
    "Requests refused with 429, by API key id and endpoint class (recommendations, feedback_events, admin).",
    ["key_id", "endpoint"],
)


def metrics_payload() -> tuple[bytes, str]:
    """The exposition of this process, or of every worker in multiprocess mode, with the memory and CPU
    of each of them."""
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest(DEFAULT_REGISTRY)
    processes = CollectorRegistry()
    processes.register(ProcessResources(Path(multiproc_dir) if multiproc_dir else None))
    return payload + generate_latest(processes), CONTENT_TYPE_LATEST


def spool_exposition(pending: int, size_bytes: int, max_bytes: int, quarantined_bytes: int) -> bytes:
    """This host's feedback spool as Prometheus text (the spool's own counters, so also while Redis is down)."""
    families = [
        GaugeMetricFamily(
            "echotune_feedback_spool_pending", "Events in this host's spool, waiting for Redis.", pending
        ),
        GaugeMetricFamily("echotune_feedback_spool_bytes", "Bytes in this host's spool.", size_bytes),
        GaugeMetricFamily(
            "echotune_feedback_spool_max_bytes",
            "The spool's size cap (ECHOTUNE_SPOOL_MAX_BYTES): 503 beyond it.",
            max_bytes,
        ),
        GaugeMetricFamily(
            "echotune_feedback_spool_quarantine_bytes",
            "Bytes of torn spool lines kept in the quarantine file.",
            quarantined_bytes,
        ),
    ]
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return generate_latest(registry)


def feedback_exposition(
    counters: Mapping[bytes, bytes],
    aggregates: Mapping[bytes, bytes],
    stream_length: int,
    heartbeat_age: float | None,
    workers_alive: int,
    activity: Mapping[str, tuple[int, int]] | None = None,
) -> bytes:
    """Feedback counters and online aggregates (kept in Redis by the API and the worker), the feedback
    workers' liveness (``heartbeat_age``: seconds since the newest heartbeat, None when there is none)
    and user engagement (``activity``: window name -> (active users, events applied)) as Prometheus text."""

    def value(field: str) -> float:
        return float(counters.get(field.encode(), 0))

    families = [
        CounterMetricFamily(
            "echotune_feedback_events_accepted",
            "Distinct feedback event ids accepted into the stream.",
            value("accepted"),
        ),
        CounterMetricFamily(
            "echotune_feedback_events_applied",
            "Distinct feedback event ids whose effect the worker stored.",
            value("applied"),
        ),
        CounterMetricFamily(
            "echotune_feedback_exposures",
            "Tracks shown in lists the API served (one recommendation_shown each), counted by the worker.",
            value("exposures"),
        ),
        CounterMetricFamily(
            "echotune_feedback_events_dead_lettered",
            "Stream entries moved to the dead-letter stream.",
            value("dead_lettered"),
        ),
        CounterMetricFamily(
            "echotune_feedback_events_dropped_erased",
            "Queued events of users erased since they were accepted, dropped by the worker.",
            value("dropped_erased"),
        ),
        GaugeMetricFamily(
            "echotune_feedback_stream_length", "Entries in the feedback stream (not yet trimmed).", stream_length
        ),
        GaugeMetricFamily(
            "echotune_feedback_workers_alive",
            "Feedback workers with a fresh heartbeat (ECHOTUNE_WORKER_STALE_SECONDS).",
            workers_alive,
        ),
    ]
    if heartbeat_age is not None:
        age = GaugeMetricFamily(
            "echotune_feedback_worker_heartbeat_age_seconds",
            "Seconds since the newest feedback worker heartbeat.",
            heartbeat_age,
        )
        families.append(age)
    registry = CollectorRegistry()
    registry.register(_Fixed([*families, *online_families(aggregates), *_activity_families(activity or {})]))
    return generate_latest(registry)


def rollout_exposition(state: Mapping[bytes, bytes], decisions: Mapping[bytes, bytes]) -> bytes:
    """The rollout's state (``RedisKeys.rollout``) and decisions taken (``rollout_decision_counts``) as
    Prometheus text: what the rollout alerts read."""
    text = {k.decode(): v.decode() for k, v in state.items()}
    share = GaugeMetricFamily(
        "echotune_rollout_candidate_share",
        "Share of the rollout layer's listeners served the candidate version (0 once rolled back, 1 once promoted).",
        labels=["version", "status"],
    )
    if text:
        share.add_metric([text.get("version", ""), text.get("status", "")], float(text.get("share", 0)))
    counts = CounterMetricFamily(
        "echotune_rollout_decisions",
        "Rollout decisions taken by the rollout sensor (start, hold, step_up, promote, rollback, superseded).",
        labels=["decision"],
    )
    for decision, n in decisions.items():
        counts.add_metric([decision.decode()], float(n))
    registry = CollectorRegistry()
    registry.register(_Fixed([share, counts]))
    return generate_latest(registry)


def online_families(aggregates: Mapping[bytes, bytes]) -> list:
    """Algorithm performance and experiment conversion from the worker's aggregates (field
    "algorithm|model_version|experiment|variant|type" -> applied events, see serving.worker.counting).
    A field or value of another shape (a hand edit, a bug) is skipped: a scrape never fails on one."""
    events: dict[tuple[str, ...], float] = defaultdict(float)
    for field, count in aggregates.items():
        parts = aggregate_parts(field.decode("utf-8", errors="replace"))
        number = _count(count)
        if parts is not None and number is not None:
            events[parts] += number  # an older three-part field and its five-part successor add up

    def by(*positions: int) -> dict[tuple[str, ...], dict[str, float]]:
        """Events per type, summed over the labels not in ``positions``."""
        sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for parts, n in events.items():
            sums[tuple(parts[i] for i in positions)][parts[4]] += n
        return sums

    detailed = CounterMetricFamily(
        "echotune_algorithm_events",
        "Applied feedback events by algorithm, model version, experiment, variant and type (model version and experiment "
        "'other': not published / not registered, or retired since; 'none': the event did not say).",
        labels=["algorithm", "model_version", "experiment", "variant", "type"],
    )
    for parts, n in events.items():
        detailed.add_metric(list(parts), n)
    summed = CounterMetricFamily(
        "echotune_feedback_events",
        "Applied events and the API's own exposures (type recommendation_shown), by algorithm, variant and type.",
        labels=["algorithm", "variant", "type"],
    )
    ctr_by_variant = GaugeMetricFamily(
        "echotune_recommendation_ctr",
        "Clicks per recommendation shown, by algorithm and variant.",
        labels=["algorithm", "variant"],
    )
    for labels, kinds in by(0, 3).items():
        for kind, n in kinds.items():
            summed.add_metric([*labels, kind], n)
        _add_ratio(ctr_by_variant, labels, kinds, "recommendation_clicked", ["recommendation_shown"])
    ctr = GaugeMetricFamily(
        "echotune_algorithm_ctr",
        "Clicks per recommendation shown (applied recommendation_clicked / recommendation_shown), by algorithm and model version.",
        labels=["algorithm", "model_version"],
    )
    completion = GaugeMetricFamily(
        "echotune_algorithm_completion_rate",
        "Plays completed per play finished (track_completed / (track_completed + track_skipped)), by algorithm and model version.",
        labels=["algorithm", "model_version"],
    )
    for labels, kinds in by(0, 1).items():
        _add_ratio(ctr, labels, kinds, "recommendation_clicked", ["recommendation_shown"])
        _add_ratio(completion, labels, kinds, "track_completed", ["track_completed", "track_skipped"])
    conversion = GaugeMetricFamily(
        "echotune_experiment_conversion",
        "Experiment conversion: clicks per recommendation shown (applied recommendation_clicked / recommendation_shown events), by experiment and variant.",
        labels=["experiment", "variant"],
    )
    for labels, kinds in by(2, 3).items():
        if labels[0] != NO_LABEL:
            _add_ratio(conversion, labels, kinds, "recommendation_clicked", ["recommendation_shown"])
    return [summed, ctr_by_variant, detailed, ctr, completion, conversion]


def _add_ratio(
    family: GaugeMetricFamily, labels, kinds: Mapping[str, float], numerator: str, denominator: list[str]
) -> None:
    total = sum(kinds.get(k, 0.0) for k in denominator)
    if total > 0:
        family.add_metric(list(labels), kinds.get(numerator, 0.0) / total)


def _count(raw) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _activity_families(activity: Mapping[str, tuple[int, int]]) -> list:
    users = GaugeMetricFamily(
        "echotune_active_users",
        "Distinct users with a feedback event applied in the window (by when the API accepted it; HyperLogLog, ~1% error).",
        labels=["window"],
    )
    per_user = GaugeMetricFamily(
        "echotune_events_per_active_user", "Feedback events applied in the window per active user.", labels=["window"]
    )
    for window, (n_users, n_events) in activity.items():
        users.add_metric([window], n_users)
        if n_users > 0:
            per_user.add_metric([window], n_events / n_users)
    return [users, per_user]


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
