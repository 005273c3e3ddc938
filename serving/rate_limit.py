"""Rate limits: how much an API key may send a minute, per endpoint class, and the 429 past it.

Each class has its own setting, counted per key:

* ``recommendations`` (``ECHOTUNE_RATE_LIMIT_PER_MINUTE``): the recommendation routes (a batch counts
  each user it asks for) and the other client reads (experiments, reports);
* ``feedback_events`` (``ECHOTUNE_RATE_LIMIT_FEEDBACK_EVENTS_PER_MINUTE``): ``POST /feedback`` counts the
  events it carries, so a 1,000-event batch costs 1,000 (counted before the events are validated);
* ``admin`` (``ECHOTUNE_RATE_LIMIT_ADMIN_PER_MINUTE``): the admin routes (erasure, experiment changes).

Windows are fixed minutes counted in Redis (``INCRBY`` on a key that expires with its window), so every
API process shares one count. Whenever the Redis verdict is missing (Redis down, its breaker open, or a
Redis that answers but refuses the counter's write: OOM, READONLY after a failover) the request is
counted in this process instead: a key then gets at most the limit per process, never no limit.

Every request of a known key is counted, refused ones included (a 403, 404 or 422 costs a unit like a
200): the key's dependency opens a :class:`Charge`; the hot routes settle it in their own Redis round
trip (no round trip of its own), the others at once, and a request that fails before either is settled
by the error handler, whose answer becomes the 429 when the key is over its limit. (Not counted: a
request without a valid key, 401, and a body the middleware refuses as too large, 413, before any key
is read.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from core.clock import Clock
from core.contracts.redis_keys import RedisKeys
from core.settings import Settings
from serving.errors import ApiError
from serving.observability import RATE_LIMITED
from serving.security import ApiKey

Endpoint = Literal["recommendations", "feedback_events", "admin"]
_UNITS = {"recommendations": "requests", "feedback_events": "feedback events", "admin": "admin requests"}


@dataclass
class Charge:
    """What one request costs one key: ``units`` of an endpoint class, counted once (``settled``)."""

    key: ApiKey
    endpoint: Endpoint
    units: int = 1
    settled: bool = False


def window(now: float) -> tuple[int, int]:
    """(the minute ``now`` falls in, seconds until it ends)."""
    minute = int(now // 60)
    return minute, max(1, int((minute + 1) * 60 - now + 0.999))


class RateLimits:
    """The per-key, per-class limits of this API process.

    ``send`` sends Redis commands in one round trip and returns their replies, or None when Redis is
    unavailable (it opens the breaker itself)."""

    def __init__(
        self, settings: Settings, keys: RedisKeys, clock: Clock, send: Callable[[list[tuple]], Awaitable[list | None]]
    ) -> None:
        self.per_minute: dict[str, int] = {
            "recommendations": settings.rate_limit_per_minute,
            "feedback_events": settings.rate_limit_feedback_events_per_minute,
            "admin": settings.rate_limit_admin_per_minute,
        }
        self.keys, self.clock, self._send = keys, clock, send
        # the in-process fallback: counts of the current minute only, so memory is bounded by the keys of one minute
        self._local_minute = -1
        self._local: dict[tuple[str, str], int] = {}

    def commands(self, charge: Charge) -> list[tuple]:
        """The commands that count ``charge`` in Redis; the last one's reply is the window's count."""
        minute, _ = window(self.clock.now())
        counter = self.keys.rate_limit(charge.key.key_id, charge.endpoint, minute)
        return [("SET", counter, 0, "EX", 61, "NX"), ("INCRBY", counter, charge.units)]

    def enforce(self, charge: Charge, count) -> None:
        """Settle ``charge`` with the reply of its counter (``count``; anything but an int means Redis
        refused the write, and the charge is counted in this process); raises the 429 past the limit."""
        if isinstance(count, int):
            charge.settled = True
            self._check(charge, count)
        else:
            self.enforce_locally(charge)

    def enforce_locally(self, charge: Charge) -> None:
        """Settle ``charge`` in this process (Redis is unavailable); raises the 429 past the limit."""
        minute, _ = window(self.clock.now())
        if minute != self._local_minute:
            self._local_minute, self._local = minute, {}
        slot = (charge.endpoint, charge.key.key_id)
        self._local[slot] = count = self._local.get(slot, 0) + charge.units
        charge.settled = True
        self._check(charge, count)

    async def settle(self, charge: Charge | None) -> None:
        """Count ``charge`` now, in a round trip of its own (no-op when already counted or None); raises
        the 429 past the limit."""
        if charge is None or charge.settled:
            return
        replies = await self._send(self.commands(charge))
        if replies is None:
            self.enforce_locally(charge)
        else:
            self.enforce(charge, replies[-1])

    def _check(self, charge: Charge, count: int) -> None:
        limit = self.per_minute[charge.endpoint]
        if count <= limit:
            return
        _, retry_after = window(self.clock.now())
        RATE_LIMITED.labels(charge.key.key_id, charge.endpoint).inc()
        units = _UNITS[charge.endpoint]
        message = f"more than {limit:,} {units} a minute for this API key; retry in {retry_after}s"
        if charge.units > limit:  # a batch no window can take
            message = f"this request carries {charge.units:,} {units}, more than the {limit:,} a minute this API key may send: send smaller batches"
        raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry_after)})
