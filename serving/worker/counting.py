"""Step 4: count applied and dead-lettered events, each event id once however often it is redelivered.

The counters (``applied``, ``dead_lettered``) and the per algorithm/variant/type aggregates feed
/metrics and the online experiment figures. A script adds an event id to the set of ids counted on
its day and counts it only if it was new, so a worker that crashed after counting and before
acknowledging does not count its batch twice when another worker reclaims it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import redis

from core.contracts.redis_keys import RedisKeys
from serving.worker.events import Event, entry_ms
from serving.worker.user_state import DEDUPE_SECONDS

# a day longer than the applied-events dedupe window: an event id still deduplicated there is never counted twice
COUNTED_TTL_SECONDS = DEDUPE_SECONDS + 86_400

# KEYS: counted set of the day, counters, aggregates; ARGV: ttl, counter field, pairs (id, aggregate field or '')
COUNT_SCRIPT = """
local new = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    new = new + 1
    if ARGV[i + 1] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if new > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], new) end
return new
"""


def utc_day(ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch time in milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


class EventCounter:
    """The exactly-once counters of the feedback worker."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.r = client
        self.keys = keys
        self._count = client.register_script(COUNT_SCRIPT)

    def _keys(self, day: str) -> list[str]:
        return [self.keys.feedback_counted(day), self.keys.feedback_counters(), self.keys.feedback_aggregates()]

    def count_applied(self, events: Sequence[Event]) -> None:
        """Adds the events not counted yet to ``applied`` and to their "algorithm|variant|type" aggregate
        (the day of an event is the day the API accepted it)."""
        by_day: dict[str, list[str]] = defaultdict(list)
        for e in events:
            row = e.row
            field = f"{row.get('algorithm') or 'none'}|{row.get('variant') or 'none'}|{row['type']}"
            by_day[utc_day(e.accepted_ms)] += [e.event_id, field]
        pipe = self.r.pipeline(transaction=False)
        for day, pairs in by_day.items():
            self._count(keys=self._keys(day), args=[COUNTED_TTL_SECONDS, "applied", *pairs], client=pipe)
        pipe.execute()

    def count_dead_lettered(self, stream_id: str) -> None:
        """Adds the stream entry ``stream_id`` to ``dead_lettered`` unless it was counted already."""
        self._count(keys=self._keys(utc_day(entry_ms(stream_id))), args=[COUNTED_TTL_SECONDS, "dead_lettered", f"dead:{stream_id}", ""])

    def count_erased(self, events: Sequence[Event]) -> None:
        """Adds the events not counted yet to ``dropped_erased``: queued events of users erased since
        (accepted, then dropped by law: neither applied nor dead letters)."""
        by_day: dict[str, list[str]] = defaultdict(list)
        for e in events:
            by_day[utc_day(e.accepted_ms)] += [f"erased:{e.event_id}", ""]
        pipe = self.r.pipeline(transaction=False)
        for day, pairs in by_day.items():
            self._count(keys=self._keys(day), args=[COUNTED_TTL_SECONDS, "dropped_erased", *pairs], client=pipe)
        pipe.execute()
