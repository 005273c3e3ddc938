"""Live feedback: the Redis feedback stream drained into the daily-partitioned event table.

A day's partition holds the entries the API accepted that day (stream ids are acceptance times in
ms). Draining writes them (merged with what is already stored, deduplicated on event_id) and fsyncs
before anything leaves the stream; only then is the stream trimmed, and never past an entry a
consumer group (the feedback worker) has not yet acknowledged. A crash between writing and trimming
leaves entries that the next drain writes again, which the event_id dedupe absorbs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import redis
from pydantic import ValidationError

from core.contracts.events import FeedbackEvent
from core.contracts.redis_keys import RedisKeys
from core.contracts.served_lists import EXPOSURE_FIELD, ServedList
from core.feedback_stream import decode, rows_to_frame
from core.ingest.result import ImportResult
from core.tables import OfflineStore

PAGE = 10_000


def _ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)


def _id_tuple(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def stream_days(client: redis.Redis, keys: RedisKeys, today: date | None = None) -> list[date]:
    """UTC days from the oldest entry still in the stream up to ``today`` (default: the current UTC
    day), oldest first."""
    first = client.xrange(keys.feedback_stream(), count=1)
    if not first:
        return []
    start = datetime.fromtimestamp(_id_tuple(first[0][0])[0] / 1000, tz=UTC).date()
    today = today or datetime.now(UTC).date()
    return [start + timedelta(days=i) for i in range((today - start).days + 1)]


def trim_floor(client: redis.Redis, keys: RedisKeys) -> tuple[int, int] | None:
    """The oldest stream id some consumer group still needs (pending or not yet delivered), or None
    when no group reads the stream."""
    stream = keys.feedback_stream()
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    floor = None
    for group in groups:
        name = group["name"]
        last = _id_tuple(group["last-delivered-id"])
        need = (last[0], last[1] + 1)
        if group["pending"]:
            summary = client.xpending(stream, name)
            need = min(need, _id_tuple(summary["min"]))
        floor = need if floor is None else min(floor, need)
    return floor


def drain_day(client: redis.Redis, keys: RedisKeys, store: OfflineStore, day: date) -> ImportResult:
    """Persist the stream entries accepted on ``day``, then trim behind them. Idempotent."""
    stream = keys.feedback_stream()
    result = ImportResult(source="live_feedback")
    start, end = _ms(day), _ms(day + timedelta(days=1))
    rows, cursor, last_id = [], f"{start}-0", None
    while True:
        page = client.xrange(stream, min=cursor, max=f"({end}-0", count=PAGE)
        if not page:
            break
        for entry_id, fields in page:
            result.read += 1
            last_id = entry_id
            try:
                if EXPOSURE_FIELD in fields:  # a list the API served: one shown row per track
                    rows += ServedList.from_payload(fields[EXPOSURE_FIELD]).rows()
                    continue
                row = decode(fields[b"e"])
                FeedbackEvent.model_validate({k: row.get(k) for k in ("event_id", "user_id", "track_id", "type", "ms_played", "rating")})
                rows.append(row)
            except (KeyError, ValueError, TypeError, ValidationError) as exc:
                result.rejects.add("stream", result.read, f"entry {entry_id.decode()}: {str(exc)[:200]}", {k.decode(): v.decode(errors="replace") for k, v in fields.items()})
        cursor = "(" + last_id.decode()
    frame = rows_to_frame(rows) if rows else None
    if frame is not None:
        unique = frame.drop_duplicates("event_id")
        result.duplicates = len(frame) - len(unique)
        added = store.write_events(unique, part="live", merge=True, fsync=True)
        result.accepted = sum(added.values())
        result.duplicates += len(unique) - result.accepted  # already persisted by an earlier drain
    if last_id is not None:
        client.set(keys.feedback_persisted(), last_id)
        ms, seq = _id_tuple(last_id)
        keep_from = (ms, seq + 1)  # everything after the newest persisted entry stays
        floor = trim_floor(client, keys)
        if floor is not None:
            keep_from = min(keep_from, floor)
        # XTRIM MINID removes exactly the ids below keep_from
        result.extra["trimmed"] = int(client.xtrim(stream, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=False))
    result.extra["day"] = str(day)
    return result


def trim_dead_letters(client: redis.Redis, keys: RedisKeys, keep_days: int, now: float | None = None) -> int:
    """Drop dead letters older than ``keep_days`` (their stream id is when they were dead-lettered):
    long enough to inspect and replay them, bounded however many arrive. Returns entries removed."""
    now = datetime.now(UTC).timestamp() if now is None else now
    floor_ms = int((now - keep_days * 86_400) * 1000)
    return int(client.xtrim(keys.feedback_dead_letters(), minid=f"{floor_ms}-0", approximate=False))
