"""The feedback stream contract: how accepted events are appended to the Redis Stream and read back.

An entry has one field, ``e``, holding the event's flattened row (:meth:`FeedbackEvent.to_row`) as JSON.
Appending is one Lua script per batch: for each event it sets the event id's idempotency mark
(``SET NX`` with a TTL) and appends only when the mark is new, then counts the new ones. So a client
retrying a batch, or the spool replaying one, never appends an event twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import redis

from core.contracts.events import EVENT_SCHEMA, FeedbackEvent
from core.contracts.redis_keys import RedisKeys

IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600

# KEYS[1] stream, KEYS[2] counters, KEYS[3..] idempotency marks; ARGV[1] ttl, ARGV[2] the stream's safety
# cap, ARGV[3..] payloads. Returns the stream id of each event, or "" where the event id was already
# accepted; an error STREAMFULL (nothing appended) when the stream holds the cap already.
APPEND_SCRIPT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.error_reply('STREAMFULL the feedback stream holds ' .. ARGV[2] .. ' entries not yet trimmed')
end
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
# The stream is trimmed only behind what is drained and acknowledged (core.ingest.live_feedback); when
# the drain stops, it grows. Past this many entries new events are refused (a 503 the client retries),
# never made room for by trimming events nobody has stored yet.
DEFAULT_MAX_ENTRIES = 5_000_000


class StreamFull(Exception):
    """The feedback stream is at its safety cap (the drain has fallen behind): nothing was appended."""


def is_stream_full(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("STREAMFULL")


def append_keys(keys: RedisKeys, event_ids: Sequence[str]) -> list[str]:
    return [keys.feedback_stream(), keys.feedback_counters(), *[keys.feedback_accepted(i) for i in event_ids]]


def append_args(rows: Sequence[bytes], max_entries: int = DEFAULT_MAX_ENTRIES) -> list:
    # ARGV[i] is the payload of KEYS[i]; ARGV[2] (the counters key's slot) carries the cap
    return [IDEMPOTENCY_TTL_SECONDS, max_entries, *rows]


def encode(event: FeedbackEvent, source: str = "api", trusted: Mapping[str, Any] | None = None, context_source: str | None = None) -> bytes:
    """The stream payload of ``event`` (see :meth:`FeedbackEvent.to_row` for ``trusted``)."""
    return orjson.dumps(event.to_row(source, trusted, context_source))


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

    def __init__(self, client: redis.Redis, keys: RedisKeys, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.r = client
        self.keys = keys
        self.max_entries = max_entries
        self._append = client.register_script(APPEND_SCRIPT)

    def append(self, events: Sequence[FeedbackEvent], source: str = "api") -> list[str | None]:
        """Append stamped events (each must have event_id); returns stream ids, None for duplicates."""
        rows = [encode(e, source) for e in events]
        try:
            result = self._append(keys=append_keys(self.keys, [e.event_id for e in events]), args=append_args(rows, self.max_entries))
        except redis.ResponseError as exc:
            if is_stream_full(exc):
                raise StreamFull(str(exc)) from exc
            raise
        return [(r.decode() if isinstance(r, bytes) else r) or None for r in result]

    def counters(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.feedback_counters()).items()}

    def length(self) -> int:
        return int(self.r.xlen(self.keys.feedback_stream()))


def dead_letters(client: redis.Redis, keys: RedisKeys, count: int = 100) -> list[dict[str, str]]:
    """The oldest ``count`` dead letters: stream id, the error, and the original entry's id."""
    entries = client.xrange(keys.feedback_dead_letters(), count=count)
    return [{"id": i.decode(), "entry": f.get(b"entry", b"").decode(), "error": f.get(b"error", b"").decode()} for i, f in entries]


def replay_dead_letters(client: redis.Redis, keys: RedisKeys, limit: int | None = None) -> int:
    """Put dead letters back on the feedback stream (once whatever made them fail is fixed: a bug, a
    bad model), oldest first, each moved in one transaction (appended, then removed from the dead
    letters). The worker applies each event at most once, so a replay never double-counts. Entries
    that were never events are left where they are. Returns the entries moved."""
    moved, cursor = 0, "-"
    while limit is None or moved < limit:
        page = client.xrange(keys.feedback_dead_letters(), min=cursor, count=500)
        if not page:
            break
        for entry_id, fields in page:
            if limit is not None and moved >= limit:
                break
            payload = fields.get(b"field:e")
            if payload is not None:
                pipe = client.pipeline(transaction=True)
                pipe.xadd(keys.feedback_stream(), {"e": payload})
                pipe.xdel(keys.feedback_dead_letters(), entry_id)
                pipe.execute()
                moved += 1
        cursor = "(" + page[-1][0].decode()
    return moved
