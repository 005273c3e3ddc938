from datetime import UTC, datetime, timedelta

import pytest

from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import encode
from core.ingest.live_feedback import DrainBusy, drain_day, drain_lock, undrained_days
from core.tables import OfflineStore

TRACK = "4uLU6hMCjMI75M1A2tKUQC"
pytestmark = (
    pytest.mark.redis_topologies
)  # the drain's keys share the {fb} slot: its lock, watermark and trims work on a cluster too


def _add(client, keys, when: datetime, n: int, start: int = 0):
    ms = int(when.timestamp() * 1000)
    for i in range(start, start + n):
        event = FeedbackEvent(user_id="u1", track_id=TRACK, type="play", event_id=f"e{i}", timestamp=when).stamped()
        client.xadd(keys.feedback_stream(), {"e": encode(event)}, id=f"{ms}-{i}")


@pytest.fixture
def days():
    """Two fixed days in the past. Regression: this used "today at 12:00", which the event schema
    rightly refused as a future timestamp whenever the suite ran before noon UTC."""
    today = datetime(2025, 3, 2, 12, tzinfo=UTC)
    return today - timedelta(days=1), today


def test_drain_persists_a_day_then_trims_behind_it(redis_client, redis_prefix, tmp_path, days):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, today = days
    _add(redis_client, keys, yesterday, 5)
    _add(redis_client, keys, today, 3, start=5)
    assert undrained_days(redis_client, keys) == [yesterday.date(), today.date()]
    result = drain_day(redis_client, keys, store, yesterday.date())
    assert (result.read, result.accepted) == (5, 5)
    assert sorted(store.read_event_part(yesterday.date(), "live")["event_id"]) == [f"e{i}" for i in range(5)]
    assert redis_client.xlen(keys.feedback_stream()) == 3  # today's entries stay
    assert undrained_days(redis_client, keys) == [today.date()]


def test_crash_between_write_and_trim_duplicates_nothing(redis_client, redis_prefix, tmp_path, days, monkeypatch):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, _ = days
    _add(redis_client, keys, yesterday, 4)
    with monkeypatch.context() as patch:
        patch.setattr(type(redis_client), "xtrim", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("crash")))
        with pytest.raises(ConnectionError):
            drain_day(redis_client, keys, store, yesterday.date())
    assert redis_client.xlen(keys.feedback_stream()) == 4  # nothing left the stream
    again = drain_day(redis_client, keys, store, yesterday.date())
    assert (again.read, again.accepted, again.extra["trimmed"]) == (0, 0, 4)  # known stored: trimmed, not read again
    assert len(store.read_event_part(yesterday.date(), "live")) == 4


def test_crash_between_write_and_marking_stores_nothing_twice(redis_client, redis_prefix, tmp_path, days, monkeypatch):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, _ = days
    _add(redis_client, keys, yesterday, 4)
    with monkeypatch.context() as patch:
        patch.setattr(type(redis_client), "hset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("crash")))
        with pytest.raises(ConnectionError):
            drain_day(redis_client, keys, store, yesterday.date())
    assert len(store.read_event_part(yesterday.date(), "live")) == 4 and redis_client.xlen(keys.feedback_stream()) == 4
    again = drain_day(redis_client, keys, store, yesterday.date())  # reads them again: the id dedupe keeps one of each
    assert (again.read, again.accepted, again.duplicates) == (4, 0, 4)
    assert len(store.read_event_part(yesterday.date(), "live")) == 4 and redis_client.xlen(keys.feedback_stream()) == 0


def test_never_trims_what_the_worker_has_not_acknowledged(redis_client, redis_prefix, tmp_path, days):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, _ = days
    _add(redis_client, keys, yesterday, 6)
    stream = keys.feedback_stream()
    redis_client.xgroup_create(stream, "workers", id="0")
    delivered = redis_client.xreadgroup("workers", "w1", {stream: ">"}, count=4)[0][1]
    redis_client.xack(stream, "workers", *[entry_id for entry_id, _ in delivered[:2]])  # 2 acked, 2 pending
    drain_day(redis_client, keys, store, yesterday.date())
    assert len(store.read_event_part(yesterday.date(), "live")) == 6  # all persisted
    assert redis_client.xlen(stream) == 4  # but only the acknowledged ones left the stream
    assert undrained_days(redis_client, keys) == []  # and they are known to be stored: not drained again
    _add(
        redis_client, keys, yesterday + timedelta(hours=1), 2, start=6
    )  # more later that day: added to the stored ones
    again = drain_day(redis_client, keys, store, yesterday.date())
    assert (again.read, again.accepted) == (2, 2) and len(store.read_event_part(yesterday.date(), "live")) == 8


def test_draining_today_then_yesterday_keeps_yesterday(redis_client, redis_prefix, tmp_path, days):
    """Regression (issue 21): ``drain_day(today)`` trimmed every entry below today's last id, whatever
    its day, so a drain of yesterday that ran after it (two runs of one sensor tick started at once by
    the run queue, or a catch-up after downtime) found nothing: 0 of yesterday's entries persisted."""
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, today = days
    _add(redis_client, keys, yesterday, 2)
    _add(redis_client, keys, today, 3, start=2)
    drain_day(redis_client, keys, store, today.date())
    assert redis_client.xlen(keys.feedback_stream()) == 5  # today's are stored, but yesterday's are not: nothing may go
    drain_day(redis_client, keys, store, yesterday.date())
    assert sorted(store.read_event_part(yesterday.date(), "live")["event_id"]) == ["e0", "e1"]
    assert sorted(store.read_event_part(today.date(), "live")["event_id"]) == ["e2", "e3", "e4"]
    assert redis_client.xlen(keys.feedback_stream()) == 0  # both days stored: now everything goes


def test_a_day_drains_page_by_page_each_event_once_into_the_day_it_is_dated(redis_client, redis_prefix, tmp_path, days):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, today = days
    _add(redis_client, keys, today, 5)
    late = FeedbackEvent(
        user_id="u2", track_id=TRACK, type="like", event_id="late", timestamp=yesterday
    ).stamped()  # an offline client syncing
    replayed = FeedbackEvent(
        user_id="u1", track_id=TRACK, type="play", event_id="e1", timestamp=today
    ).stamped()  # a dead letter replayed
    ms = int(today.timestamp() * 1000)
    for seq, event in ((10, late), (11, replayed)):  # both accepted today
        redis_client.xadd(keys.feedback_stream(), {"e": encode(event)}, id=f"{ms}-{seq}")
    result = drain_day(redis_client, keys, store, today.date(), page=2)
    assert (result.read, result.accepted, result.duplicates) == (7, 6, 1)
    assert sorted(store.read_event_part(today.date(), "live")["event_id"]) == [f"e{i}" for i in range(5)]
    assert list(store.read_event_part(yesterday.date(), "live")["event_id"]) == ["late"]
    assert redis_client.xlen(keys.feedback_stream()) == 0 and undrained_days(redis_client, keys) == []


def test_one_drain_at_a_time(redis_client, redis_prefix, tmp_path, days):
    keys, store = RedisKeys(redis_prefix), OfflineStore(tmp_path)
    yesterday, _ = days
    _add(redis_client, keys, yesterday, 3)
    with drain_lock(redis_client, keys):  # another drain (or an erasure rewriting live files) holds the stream
        with pytest.raises(DrainBusy, match="another drain"):
            drain_day(redis_client, keys, store, yesterday.date(), wait_seconds=0.2)
    assert redis_client.xlen(keys.feedback_stream()) == 3 and not store.event_partition(yesterday.date()).exists()
    assert drain_day(redis_client, keys, store, yesterday.date()).accepted == 3
