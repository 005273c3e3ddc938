"""Live feedback: the Redis feedback stream drained into the daily-partitioned event table.

A day's drain persists the stream entries the API accepted that UTC day (stream ids are acceptance
times in ms), page by page: each page is decoded and appended to the event files of the days its rows
are dated (:meth:`core.tables.OfflineStore.append_events`: memory bounded by the page, each event id
stored once, the files swapped in atomically and fsync'd). Only then does anything leave the stream.

What may leave is decided by a **watermark** (``feedback_drained_until``): every entry up to it is
stored. A drain records the last entry it stored for its day (``feedback_drained_days``), then moves the
watermark forward over the next entries while they belong to days drained that far, and stops at the
first entry not stored. So draining today before yesterday stores today's entries and trims nothing
of yesterday's; yesterday's drain then carries the watermark over both days. The stream is trimmed
up to the watermark, and never past an entry a consumer group (the feedback worker) has not yet
acknowledged. (Trimming by each day's id range instead would need XDEL of every id: the watermark
keeps XTRIM MINID, and the state is one id plus a mark per day drained ahead.)

One drain runs at a time (:func:`drain_lock`, a Redis lock every process shares: the sensor's runs,
``echotune pipeline`` in-process, a run launched by hand), so two never rewrite one day's file at once;
:func:`undrained_days` lists the days to drain, oldest first, for the sensor and the pipeline alike.
A crash after the files are swapped in but before the marks move makes the next drain read those
entries again; the event-id dedupe stores nothing twice. A crash before leaves the old files.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import redis
from pydantic import ValidationError
from redis.lock import Lock

from core.contracts.events import FeedbackEvent
from core.contracts.redis_keys import RedisKeys
from core.contracts.served_lists import EXPOSURE_FIELD, ServedList
from core.feedback_stream import decode, rows_to_frame
from core.ingest.result import ImportResult
from core.tables import OfflineStore

PAGE = 10_000  # entries read per XRANGE: ~14 MB of decoded rows
LOCK_SECONDS = 60  # the drain lock's lease, renewed every third of it: a drain that dies frees it within a minute
StreamId = tuple[int, int]


class DrainBusy(RuntimeError):
    """Another drain holds the stream's drain lock (or this one lost it): retry when it is done."""


def _ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)


def _id_tuple(stream_id: bytes | str) -> StreamId:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def _day(stream_id: StreamId) -> date:
    return datetime.fromtimestamp(stream_id[0] / 1000, tz=UTC).date()


@contextlib.contextmanager
def drain_lock(client: redis.Redis, keys: RedisKeys, wait_seconds: float = 900.0) -> Iterator[Lock]:
    """Hold the feedback stream's drain lock while the block runs: one drain, or rewrite of live event
    files (erasures), at a time across processes and hosts. Waits up to ``wait_seconds`` for another
    holder, then raises :class:`DrainBusy`. The lease is renewed by a thread while the block runs."""
    lock = client.lock(
        keys.feedback_drain_lock(), timeout=LOCK_SECONDS, blocking_timeout=wait_seconds, thread_local=False
    )
    if not lock.acquire():
        raise DrainBusy(
            f"another drain held the feedback stream's drain lock ({keys.feedback_drain_lock()}) for {wait_seconds:.0f} s: "
            "nothing was drained; the next run retries"
        )
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LOCK_SECONDS / 3):
            try:
                lock.reacquire()
            except redis.exceptions.LockError:
                return  # lost: the holder checks owned() before it swaps files in
            except redis.RedisError:
                continue

    renewer = threading.Thread(target=renew, name="drain-lock", daemon=True)
    renewer.start()
    try:
        yield lock
    finally:
        done.set()
        renewer.join()
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _watermark(client: redis.Redis, keys: RedisKeys) -> StreamId:
    raw = client.get(keys.feedback_drained_until())
    return _id_tuple(raw) if raw else (0, 0)


def _marks(client: redis.Redis, keys: RedisKeys) -> dict[str, StreamId]:
    return {day.decode(): _id_tuple(last) for day, last in client.hgetall(keys.feedback_drained_days()).items()}


def _first_after(client: redis.Redis, stream: str, after: StreamId | str, until: str = "+") -> StreamId | None:
    start = after if isinstance(after, str) else f"({_text(after)}"
    entry = client.xrange(stream, min=start, max=until, count=1)
    return _id_tuple(entry[0][0]) if entry else None


def undrained_days(client: redis.Redis, keys: RedisKeys) -> list[date]:
    """UTC days with stream entries not yet stored, oldest first: the days to drain, in this order."""
    stream, marks = keys.feedback_stream(), _marks(client, keys)
    days, after = [], _watermark(client, keys)
    while (entry := _first_after(client, stream, after)) is not None:
        day = _day(entry)
        mark = marks.get(str(day))
        end = f"({_ms(day + timedelta(days=1))}-0"
        if mark is None or mark < entry or _first_after(client, stream, mark, end) is not None:
            days.append(day)
        after = f"{_ms(day + timedelta(days=1))}-0"
    return days


def trim_floor(client: redis.Redis, keys: RedisKeys) -> StreamId | None:
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


def _decoded(entries: list, result: ImportResult) -> pd.DataFrame | None:
    """One page of stream entries as event rows; undecodable entries become rejects."""
    rows = []
    for entry_id, fields in entries:
        result.read += 1
        try:
            if EXPOSURE_FIELD in fields:  # a list the API served: one shown row per track
                rows += ServedList.from_payload(fields[EXPOSURE_FIELD]).rows()
                continue
            row = decode(fields[b"e"])
            FeedbackEvent.model_validate(
                {k: row.get(k) for k in ("event_id", "user_id", "track_id", "type", "ms_played", "rating")}
            )
            rows.append(row)
        except (KeyError, ValueError, TypeError, ValidationError) as exc:
            result.rejects.add(
                "stream",
                result.read,
                f"entry {entry_id.decode()}: {str(exc)[:200]}",
                {k.decode(): v.decode(errors="replace") for k, v in fields.items()},
            )
    return rows_to_frame(rows) if rows else None


def drain_day(
    client: redis.Redis, keys: RedisKeys, store: OfflineStore, day: date, page: int = PAGE, wait_seconds: float = 900.0
) -> ImportResult:
    """Store the stream entries accepted on ``day`` that are not stored yet, then move the watermark
    and trim behind it (see the module docstring). Idempotent; one drain of a stream at a time."""
    stream = keys.feedback_stream()
    result = ImportResult(source="live_feedback")
    with drain_lock(client, keys, wait_seconds) as lock:
        stored = max(_watermark(client, keys), _marks(client, keys).get(str(day), (0, 0)))
        start = f"({_text(stored)}" if stored >= (_ms(day), 0) else f"{_ms(day)}-0"
        top = client.xrevrange(stream, count=1)  # entries arriving meanwhile wait for the next drain
        end = f"({_ms(day + timedelta(days=1))}-0"
        if top and _day(_id_tuple(top[0][0])) == day:
            end = top[0][0].decode()
        last = None
        with store.append_events("live", fsync=True) as out:
            while entries := client.xrange(stream, min=start, max=end, count=page):
                frame = _decoded(entries, result)
                if frame is not None:
                    out.add(frame)
                last = entries[-1][0].decode()
                start = f"({last}"
            if not lock.owned():
                raise DrainBusy(
                    "the drain lost its lock (Redis unreachable longer than its lease): nothing was swapped in; the next run retries"
                )
        result.accepted, result.duplicates = sum(out.added.values()), out.duplicates
        if last is not None:
            client.hset(keys.feedback_drained_days(), str(day), last)
        watermark = advance_watermark(client, keys)
        result.extra["trimmed"] = trim_stored(client, keys, watermark)
    result.extra["day"] = str(day)
    result.extra["drained_until"] = _text(watermark)
    return result


def advance_watermark(client: redis.Redis, keys: RedisKeys) -> StreamId:
    """Move the watermark over the entries that follow it while each one's day is drained past it;
    forget the day marks it has passed. Returns the watermark."""
    stream, marks, watermark = keys.feedback_stream(), _marks(client, keys), _watermark(client, keys)
    while (entry := _first_after(client, stream, watermark)) is not None:
        mark = marks.get(str(_day(entry)))
        if mark is None or mark < entry:
            break  # the first entry not stored: the watermark stops before it
        watermark = mark
    client.set(keys.feedback_drained_until(), _text(watermark))
    passed = [day for day, mark in marks.items() if mark <= watermark]
    if passed:
        client.hdel(keys.feedback_drained_days(), *passed)
    return watermark


def trim_stored(client: redis.Redis, keys: RedisKeys, watermark: StreamId) -> int:
    """Trim the stream up to ``watermark`` (everything stored), never past an entry a consumer group
    still needs. Returns the entries removed."""
    keep_from = (watermark[0], watermark[1] + 1)
    floor = trim_floor(client, keys)
    if floor is not None:
        keep_from = min(keep_from, floor)
    # XTRIM MINID removes exactly the ids below keep_from
    return int(client.xtrim(keys.feedback_stream(), minid=_text(keep_from), approximate=False))


def trim_dead_letters(client: redis.Redis, keys: RedisKeys, keep_days: int, now: float | None = None) -> int:
    """Drop dead letters older than ``keep_days`` (their stream id is when they were dead-lettered):
    long enough to inspect and replay them, bounded however many arrive. Returns entries removed."""
    now = datetime.now(UTC).timestamp() if now is None else now
    floor_ms = int((now - keep_days * 86_400) * 1000)
    return int(client.xtrim(keys.feedback_dead_letters(), minid=f"{floor_ms}-0", approximate=False))
