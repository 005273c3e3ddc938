"""Worker heartbeats: each worker stamps its consumer name with the time in one Redis hash
(:meth:`RedisKeys.worker_heartbeats`), so readiness, ``/metrics`` and operators can tell whether any
worker is alive. A worker removes its own field when it stops cleanly; fields of workers that died
are forgotten after an hour by the others, so the hash stays bounded however often workers restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys

log = logging.getLogger(__name__)

BEAT_EVERY_SECONDS = 1.0  # a loop round is ~1 s (the blocking read) or much less under load: beat at most this often
FORGET_AFTER_SECONDS = 3600.0  # a worker silent this long is gone; its field is removed
PRUNE_EVERY_SECONDS = 60.0


class Heartbeat:
    """One worker's heartbeat (``consumer`` -> epoch ms of its last beat)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, consumer: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.r, self.key, self.consumer, self.clock = client, keys.worker_heartbeats(), consumer, clock
        self._beat_at = float("-inf")
        self._pruned_at = float("-inf")

    def beat(self) -> None:
        """Stamp the time (at most once a second; now and then forget long-silent workers). A Redis
        error is logged, not raised: the loop's own Redis calls decide whether the round fails."""
        if self.clock.monotonic() - self._beat_at < BEAT_EVERY_SECONDS:
            return
        now_ms = int(self.clock.now() * 1000)
        try:
            self.r.hset(self.key, self.consumer, now_ms)
            self._beat_at = self.clock.monotonic()
            if self.clock.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
                self._pruned_at = self.clock.monotonic()
                stamps = self.r.hgetall(self.key)
                silent = [
                    field for field, ms in stamps.items() if (_ms(ms) or 0) < now_ms - FORGET_AFTER_SECONDS * 1000
                ]
                if silent:
                    self.r.hdel(self.key, *silent)
        except redis.RedisError as exc:
            log.warning("could not write the worker heartbeat (%s)", exc)

    def age_seconds(self) -> float | None:
        """Seconds since this worker last stamped its heartbeat in Redis (None: never yet). Its own
        /metrics reports it, so a worker that runs but cannot reach Redis shows an ageing heartbeat."""
        if self._beat_at == float("-inf"):
            return None
        return max(0.0, self.clock.monotonic() - self._beat_at)

    def leave(self) -> None:
        """Remove this worker's field (a clean exit: it is not alive any more)."""
        try:
            self.r.hdel(self.key, self.consumer)
        except redis.RedisError as exc:
            log.warning("could not remove the worker heartbeat (%s); it goes stale by itself", exc)


@dataclass(frozen=True)
class WorkerLiveness:
    """What the heartbeats say at one moment."""

    newest_age_seconds: float | None  # since the newest heartbeat; None: no worker has written one
    alive: int  # workers whose heartbeat is at most ``stale_seconds`` old


def worker_liveness(stamps: Mapping[bytes, bytes], now: float, stale_seconds: float) -> WorkerLiveness:
    """The liveness in the heartbeat hash ``stamps`` (as HGETALL returns it) at epoch time ``now``."""
    ages = [max(0.0, now - ms / 1000) for ms in map(_ms, stamps.values()) if ms is not None]
    return WorkerLiveness(min(ages) if ages else None, sum(age <= stale_seconds for age in ages))


def _ms(value: bytes) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
