"""What the API answered with each model version: requests, 5xx errors and a latency histogram, summed
over every API process in Redis (``RedisKeys.version_health``), where the rollout reads a candidate's
error rate and P95 against the ADR's budgets (:func:`experiments.rollout.read_health`).

A route names the version behind its answer with :func:`note_version`; the request middleware opens a
note per request (:func:`open_note`) and, once the answer is sent, counts it here. Counting costs no
round trip of its own: counts wait in this process and ride along with the exposures' flush every
``serving.exposures.FLUSH_SECONDS`` (HINCRBY of a few fields per version, then an EXPIRE)."""

from __future__ import annotations

from bisect import bisect_left
from contextvars import ContextVar

from core.contracts.redis_keys import RedisKeys
from experiments.rollout import HEALTH_TTL_SECONDS
from experiments.rollout_rules import LATENCY_BUCKETS_MS
from serving.observability import VERSION_ERRORS, VERSION_LATENCY

# the request's note: a dict the route fills with the version it served (a dict, so a task the route
# starts still writes into the request's own note)
_NOTE: ContextVar[dict | None] = ContextVar("served_version", default=None)


def open_note() -> dict:
    note: dict = {}
    _NOTE.set(note)
    return note


def note_version(version: str | None) -> None:
    """The current request is answered by model ``version``."""
    note = _NOTE.get()
    if note is not None and version:
        note["version"] = version


class VersionHealthCounts:
    """This process's counts not yet sent to Redis, per version."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, int]] = {}

    def record(self, version: str, seconds: float, error: bool) -> None:
        VERSION_LATENCY.labels(version).observe(seconds)
        counts = self._pending.setdefault(version, {})
        counts["requests"] = counts.get("requests", 0) + 1
        bucket = f"b{bisect_left(LATENCY_BUCKETS_MS, seconds * 1000.0)}"
        counts[bucket] = counts.get(bucket, 0) + 1
        if error:
            VERSION_ERRORS.labels(version).inc()
            counts["errors"] = counts.get("errors", 0) + 1

    def take_commands(self, keys: RedisKeys) -> list[tuple]:
        """The Redis commands adding every pending count (and forgetting them here)."""
        pending, self._pending = self._pending, {}
        commands = []
        for version, counts in pending.items():
            key = keys.version_health(version)
            commands += [("HINCRBY", key, field, n) for field, n in counts.items()]
            commands.append(("EXPIRE", key, HEALTH_TTL_SECONDS))
        return commands
