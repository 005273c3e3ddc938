"""The feedback stream contract: how accepted events are appended to the Redis Stream and read back.

An entry has one field, ``e``, holding the event's flattened row (:meth:`FeedbackEvent.to_row`) as JSON.
Appending is one Lua script per batch: for each event it sets the event id's idempotency mark
(``SET NX`` with a TTL) and appends only when the mark is new, then counts the new ones. So a client
retrying a batch, or the spool replaying one, never appends an event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import redis

from core.contracts.events import EVENT_SCHEMA, FeedbackEvent
from core.contracts.redis_keys import RedisKeys

IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600

# KEYS[1] stream, KEYS[2] counters, KEYS[3..] idempotency marks; ARGV[1] ttl, ARGV[2..] payloads.
# Returns the stream id of each event, or "" where the event id was already accepted.
APPEND_SCRIPT = """
local ids = {}
local new = 0
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    new = new + 1
  else
    ids[#ids + 1] = ''
  end
end
if new > 0 then redis.call('HINCRBY', KEYS[2], 'accepted', new) end
return ids
"""


def append_keys(keys: RedisKeys, event_ids: Sequence[str]) -> list[str]:
    return [keys.feedback_stream(), keys.feedback_counters(), *[keys.feedback_accepted(i) for i in event_ids]]


def append_args(rows: Sequence[bytes]) -> list:
    # ARGV[i] is the payload of KEYS[i]; ARGV[2] (the counters key's slot) is unused
    return [IDEMPOTENCY_TTL_SECONDS, b"", *rows]


def encode(event: FeedbackEvent, source: str = "api") -> bytes:
    return orjson.dumps(event.to_row(source))


def decode(payload: bytes | str) -> dict[str, Any]:
    row = orjson.loads(payload)
    if isinstance(row.get("timestamp"), str):
        row["timestamp"] = datetime.fromisoformat(row["timestamp"])
    return row


def rows_to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Decoded entries as an EVENT_SCHEMA frame."""
    frame = pd.DataFrame(list(rows), columns=EVENT_SCHEMA.names)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


class FeedbackStream:
    """Append to and inspect the feedback stream (sync client: pipelines, worker, tests)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.r = client
        self.keys = keys
        self._append = client.register_script(APPEND_SCRIPT)

    def append(self, events: Sequence[FeedbackEvent], source: str = "api") -> list[str | None]:
        """Append stamped events (each must have event_id); returns stream ids, None for duplicates."""
        rows = [encode(e, source) for e in events]
        result = self._append(keys=append_keys(self.keys, [e.event_id for e in events]), args=append_args(rows))
        return [(r.decode() if isinstance(r, bytes) else r) or None for r in result]

    def counters(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.feedback_counters()).items()}

    def length(self) -> int:
        return int(self.r.xlen(self.keys.feedback_stream()))
