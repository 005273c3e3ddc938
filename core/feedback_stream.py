"""The feedback stream contract: how accepted events are appended to the Redis Stream and read back.

An entry has one field, ``e``, holding the event's flattened row (:meth:`FeedbackEvent.to_row`) as JSON.
Appending is one Lua script per batch. Each event carries two marks (``SET NX`` with a TTL): its event
id, so a client retrying a batch or the spool replaying one never appends an event twice; and, for an
event answering a request token, its (list, track, type), so a list's track counts once for the list
however often a client sends it. A click or an exposure repeated on a list's track is a duplicate; a
listening event repeated there (a second completion of the same recommended track) is real listening:
it is appended as a *repeat* (its :data:`LIST_CONTEXT` cleared: no list, no arm), kept for learning and
counted for no arm. The script refuses the whole batch (STREAMFULL) when the stream is at its cap or
Redis is nearly out of memory: sized together below (:data:`BYTES_PER_EVENT`, :func:`stream_cap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import redis

from core.contracts.events import EVENT_SCHEMA, FeedbackEvent
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog

# How long an accepted event id stays marked (a retry or a spool replay within it is not appended twice).
# One day: a mark outlives its stream entry (drained within minutes), so marks are most of the feedback's
# memory at any volume (153 B each, measured); the drain and the worker dedupe by event id behind them.
# A request token is valid for a day too, so its (list, track, type) mark outlives the token.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600

# What one accepted event costs Redis until it is drained: its stream entry (469 B) and its marks (153 B
# each: its event id's and, answering a token, its list's), measured on Redis 6.2 with 20,000 API events
# carrying a token's context (one mark then); rounded up for two.
BYTES_PER_EVENT = 800
# The stream cap leaves the feedback half of Redis's maxmemory; the other half holds the vectors, played
# sets, online state and the marks of drained events.
STREAM_MEMORY_SHARE = 0.5
# Past this share of maxmemory (any Redis that has one) the script refuses feedback whatever the stream's
# length: the last 10% stays for the worker's writes, rate-limit counters and exposures, so a Redis full
# of feedback never refuses everyone's writes (noeviction).
REFUSE_ABOVE_MEMORY_SHARE = 0.9

# a repeat of these on a list's track says nothing new (one click, one exposure per track and list)
COUNTED_ONCE_PER_LIST = frozenset({"recommendation_clicked", "recommendation_shown"})
# the row columns that name a list or an arm: a repeat names neither
LIST_CONTEXT = ("request_id", "surface", "algorithm", "model_version", "experiment_id", "variant", "position")


# KEYS[1] stream, KEYS[2] counters, KEYS[3] the memory verdict (a 100 ms cache of INFO), then per event
# two marks: its event id's and its list's (the same key when it answers no token); ARGV[1] ttl, ARGV[2]
# the stream's cap, ARGV[3] the memory share past which feedback is refused, then per event its payload
# and "1" when a repeat of it on its list is stored as a repeat (the script clears the list columns:
# no second payload crosses the network), "0" when a repeat is a duplicate. Returns the stream id of each event, or ""
# where it was a duplicate; an error STREAMFULL (nothing appended) when the stream holds the cap already
# or Redis is above the memory share.
APPEND_SCRIPT = """
local LIST_CONTEXT = {LIST_CONTEXT_COLUMNS}
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.error_reply('STREAMFULL the feedback stream holds ' .. ARGV[2] .. ' entries not yet drained (its cap): the drain is behind')
end
local full = redis.call('GET', KEYS[3])
if not full then
  local info = redis.call('INFO', 'memory')
  local used = tonumber(string.match(info, 'used_memory:(%d+)'))
  local max = tonumber(string.match(info, 'maxmemory:(%d+)'))
  full = (max > 0 and used >= max * tonumber(ARGV[3])) and '1' or '0'
  redis.pcall('SET', KEYS[3], full, 'PX', 100)  -- refused past maxmemory (OOM): then INFO is read each time
end
if full == '1' then
  return redis.error_reply('STREAMFULL Redis is above ' .. math.floor(ARGV[3] * 100) .. '% of its maxmemory: feedback waits until the drain frees memory')
end
local ids = {}
local new = 0
for i = 4, #KEYS, 2 do
  local id = ''
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    if KEYS[i + 1] == KEYS[i] or redis.call('SET', KEYS[i + 1], '1', 'NX', 'EX', ARGV[1]) then
      id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    elseif ARGV[i + 1] == '1' then
      local row = cjson.decode(ARGV[i])
      for _, column in ipairs(LIST_CONTEXT) do row[column] = cjson.null end
      row['context_source'] = 'repeat'
      id = redis.call('XADD', KEYS[1], '*', 'e', cjson.encode(row))
    end
  end
  if id ~= '' then new = new + 1 end
  ids[#ids + 1] = id
end
if new > 0 then redis.call('HINCRBY', KEYS[2], 'accepted', new) end
return ids
""".replace("{LIST_CONTEXT_COLUMNS}", "{" + ", ".join(f"'{column}'" for column in LIST_CONTEXT) + "}")


def stream_cap(maxmemory_bytes: int) -> int:
    """The stream cap a Redis of ``maxmemory_bytes`` can hold with its idempotency marks, in the
    feedback half of its memory (1,342,177 entries for 2 GB)."""
    return max(1000, int(maxmemory_bytes * STREAM_MEMORY_SHARE // BYTES_PER_EVENT))


# The stream is trimmed only behind what is drained and acknowledged (core.ingest.live_feedback); when
# the drain stops, it grows. Past its cap new events are refused (a 503 the client retries), never made
# room for by trimming events nobody has stored yet. The default is the embedded Redis's (2 GB).
DEFAULT_MAX_ENTRIES = stream_cap(2 * 1024**3)


class StreamFull(Exception):
    """The feedback stream is at its safety cap (the drain has fallen behind): nothing was appended."""


def is_stream_full(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("STREAMFULL")


def mark_id(row: Mapping[str, Any]) -> str:
    """The per-list mark of an encoded event row: for an event counted under a request token its (list,
    track, type), so a list's track counts once for the list; else its event id."""
    if row.get("context_source") == "token" and row.get("request_id"):
        return f"list:{row['request_id']}:{row['track_id']}:{row['type']}"
    return row["event_id"]


def append_call(
    keys: RedisKeys, rows: Sequence[bytes], max_entries: int = DEFAULT_MAX_ENTRIES
) -> tuple[list[str], list]:
    """The append script's keys and arguments for encoded ``rows`` (see :data:`APPEND_SCRIPT`)."""
    call_keys = [keys.feedback_stream(), keys.feedback_counters(), keys.feedback_memory_full()]
    # ARGV[i] goes with KEYS[i]: ARGV[1..3] (the slots of the stream, counters and memory keys) carry the settings
    args: list = [IDEMPOTENCY_TTL_SECONDS, max_entries, REFUSE_ABOVE_MEMORY_SHARE]
    for payload in rows:
        row = orjson.loads(payload)
        call_keys += [keys.feedback_accepted(row["event_id"]), keys.feedback_accepted(mark_id(row))]
        args += [payload, "0" if row["type"] in COUNTED_ONCE_PER_LIST else "1"]
    return call_keys, args


def encode(
    event: FeedbackEvent,
    source: str = "api",
    trusted: Mapping[str, Any] | None = None,
    context_source: str | None = None,
) -> bytes:
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
            call_keys, args = append_call(self.keys, rows, self.max_entries)
            result = self._append(keys=call_keys, args=args)
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
    return [
        {"id": i.decode(), "entry": f.get(b"entry", b"").decode(), "error": f.get(b"error", b"").decode()}
        for i, f in entries
    ]


@dataclass(frozen=True)
class DeadLetterReplay:
    replayed: int  # entries moved back onto the stream
    dropped_erased: int  # entries of erased users, deleted instead


def replay_dead_letters(
    client: redis.Redis, keys: RedisKeys, erasures: ErasureLog, limit: int | None = None
) -> DeadLetterReplay:
    """Put dead letters back on the feedback stream (once whatever made them fail is fixed: a bug, a
    bad model), oldest first, each moved in one transaction (appended, then removed from the dead
    letters). The worker applies each event at most once, so a replay never double-counts. Entries
    that were never events are left where they are. Events of users erased since (the offline log
    ``erasures`` is the authority, Redis's copy is added to it) are deleted, not replayed, and so are
    any online keys of those users (an erasure whose DELETE found Redis down left them)."""
    subjects = set(erasures.subjects()) | {s.decode() for s in client.hkeys(keys.erased_users())}
    moved = dropped = 0
    erased_users: set[str] = set()
    cursor = "-"
    while limit is None or moved < limit:
        page = client.xrange(keys.feedback_dead_letters(), min=cursor, count=500)
        if not page:
            break
        for entry_id, fields in page:
            if limit is not None and moved >= limit:
                break
            payload = fields.get(b"field:e")
            erased = _erased_user(payload, erasures, subjects) if payload is not None and subjects else None
            if erased is not None:
                client.xdel(keys.feedback_dead_letters(), entry_id)
                erased_users.add(erased)
                dropped += 1
            elif payload is not None:
                pipe = client.pipeline(transaction=True)
                pipe.xadd(keys.feedback_stream(), {"e": payload})
                pipe.xdel(keys.feedback_dead_letters(), entry_id)
                pipe.execute()
                moved += 1
        cursor = "(" + page[-1][0].decode()
    if erased_users:
        versions = [v.decode() for v in client.zrange(keys.models_index(), 0, -1)]
        for user in erased_users:  # one slot per user ({u:<id>}): one DEL each
            client.execute_command("DEL", *keys.user_keys(user, versions))
    return DeadLetterReplay(moved, dropped)


def _erased_user(payload: bytes, erasures: ErasureLog, subjects: set[str]) -> str | None:
    """The user of a dead letter's event when they are an erased subject, else None."""
    try:
        user = orjson.loads(payload).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return user if isinstance(user, str) and erasures.digest(user) in subjects else None
