"""The feedback spool: torn lines, appends racing a replay, the size cap, a disk that refuses a write."""

import asyncio
import contextlib
import resource
import signal
import stat
from pathlib import Path

import hypothesis
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from core.clock import ManualClock
from core.contracts import RedisKeys
from core.feedback_stream import FeedbackStream
from serving.feedback import replay_spool
from serving.main import create_app
from serving.spool import QUARANTINE, Spool
from tests.serving.conftest import CLIENT_KEY

TRACK = "4uLU6hMCjMI75M1A2tKUQC"
ROOMY = 1 << 30


def rows(*event_ids: str) -> list[bytes]:
    return [orjson.dumps({"event_id": i, "user_id": "u1", "track_id": TRACK, "type": "play"}) for i in event_ids]


class Recorder:
    """Stands in for the stream's append script: what the spool sent, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, batch: list[bytes]) -> None:
        self.sent += [orjson.loads(row)["event_id"] for row in batch]


def quarantined() -> float:
    return REGISTRY.get_sample_value("echotune_feedback_spool_quarantined_total") or 0.0


def test_a_torn_line_is_quarantined_and_the_rest_replayed(tmp_path):
    """Regression: one torn line (a write cut short) raised a decode error that killed the replay task,
    and every later file waited forever."""
    spool = Spool(tmp_path / "spool")
    spool.append(rows("a", "b"), max_bytes=ROOMY)
    with open(spool.files()[0], "ab") as handle:
        handle.write(b'{"event_id": "c", "us')  # the process died mid-write: no newline, no 202
    spool.append(rows("d"), max_bytes=ROOMY)  # the next append must not glue its row to the torn one
    (spool.folder / "spool-999-deadbeef.jsonl").write_bytes(rows("e")[0] + b"\n\x00\xff not json\n" + rows("f")[0])
    before = quarantined()

    recorder = Recorder()
    assert asyncio.run(spool.replay(recorder)) == 5
    assert sorted(recorder.sent) == ["a", "b", "d", "e", "f"]
    assert spool.files() == [] and spool.pending() == 0
    lines = (spool.folder / QUARANTINE).read_bytes().splitlines()
    assert sorted(lines) == [b"\x00\xff not json", b'{"event_id": "c", "us']
    assert quarantined() - before == 2
    assert stat.S_IMODE((spool.folder / QUARANTINE).stat().st_mode) == 0o600


def test_spool_files_are_private(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append(rows("a"), max_bytes=ROOMY)
    assert [stat.S_IMODE(p.stat().st_mode) for p in spool.files()] == [0o600]


class RacingSpool(Spool):
    """Runs ``race`` at the worst moment of the next append: the file is open, the lock not yet held."""

    race = None
    raced = False

    def _wait_for_lock(self, fd: int) -> None:
        if self.race is not None:
            race, self.race = self.race, None
            race()
            self.raced = True
        super()._wait_for_lock(fd)


def test_an_append_racing_a_replay_loses_nothing(tmp_path):
    """Regression: the appender opened its file, then waited for the lock while the replayer sent the
    file to Redis and deleted it; the append then went, fsync'd and answered 202, into a deleted file."""
    spool = RacingSpool(tmp_path / "spool")
    replayer = Spool(tmp_path / "spool")  # another process's replay task on the same folder
    recorder = Recorder()
    spool.append(rows("a"), max_bytes=ROOMY)
    spool.race = lambda: asyncio.run(replayer.replay(recorder))
    spool.append(rows("b"), max_bytes=ROOMY)  # opened the file "a" is in; the replay takes that file meanwhile
    assert spool.raced and recorder.sent == ["a"]
    assert spool.pending() == 1  # "b" is in a file of its own, not in the one replayed and deleted
    asyncio.run(replayer.replay(recorder))
    assert recorder.sent == ["a", "b"] and spool.files() == []


def test_an_interrupted_replay_keeps_its_file_and_finishes_later(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append(rows(*[f"e{i}" for i in range(3)]), max_bytes=ROOMY)

    async def redis_gone(batch):
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        asyncio.run(spool.replay(redis_gone))
    assert spool.pending() == 3 and spool.files()[0].name.startswith("replay-")  # claimed, still there
    spool.append(rows("late"), max_bytes=ROOMY)  # goes to a new file, never the claimed one
    recorder = Recorder()
    assert asyncio.run(spool.replay(recorder)) == 4
    assert recorder.sent == ["e0", "e1", "e2", "late"] and spool.files() == []


def test_a_write_the_disk_refuses_halfway_leaves_no_torn_line(tmp_path):
    """A full disk cuts a write short; the appender takes its partial batch back (and the API answers
    503), so the file holds only whole, acknowledged rows."""
    spool = Spool(tmp_path / "spool")
    spool.append(rows("a"), max_bytes=ROOMY)
    size = spool.size()
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30, previous_limit[1]))  # room for part of a row only
    try:
        with pytest.raises(OSError):
            spool.append(rows("b", "c"), max_bytes=ROOMY)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert spool.size() == size
    spool.append(rows("d"), max_bytes=ROOMY)
    recorder = Recorder()
    asyncio.run(spool.replay(recorder))
    assert recorder.sent == ["a", "d"] and not (spool.folder / QUARANTINE).exists()


def event(event_id: str) -> dict:
    return {"user_id": "u1", "track_id": TRACK, "type": "play", "event_id": event_id}


def test_a_full_spool_answers_503_with_retry_after_and_stores_nothing(settings, published, redis_client):
    configured = settings.model_copy(update={"spool_max_bytes": 8192})
    clock = ManualClock()
    with TestClient(create_app(configured, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        state = client.app.state.echotune
        state.breaker.failed()  # Redis counts as down until the clock moves: feedback goes to the spool
        accepted, refused = [], None
        for n in range(100):
            batch = [event(f"b{n}-{i}") for i in range(5)]
            response = client.post("/feedback", json=batch)
            if response.status_code != 202:
                refused = (batch, response)
                break
            assert response.json()["spooled"]
            accepted += [e["event_id"] for e in batch]
        assert refused is not None, "the spool never filled up"
        batch, response = refused
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "spool_full"
        assert state.spool.size() <= 8192 and state.spool.pending() == len(accepted)
        spooled = b"".join(path.read_bytes() for path in state.spool.files())
        assert all(e["event_id"].encode() not in spooled for e in batch)  # nothing of the refused batch

        clock.advance(1.1)  # Redis is back (the breaker's cooldown is over): replay
        client.portal.call(replay_spool, state)
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    streamed = [
        orjson.loads(fields[b"e"])["event_id"]
        for _, fields in redis_client.xrange(RedisKeys(settings.redis_prefix).feedback_stream())
        if b"e" in fields
    ]
    assert streamed == accepted and stream.counters()["accepted"] == len(accepted)


def test_a_torn_spool_file_left_by_a_crash_does_not_stop_the_next_start(settings, published, redis_client):
    """A file of a process that died mid-write: the next API start replays what is whole, quarantines
    the rest and reports it on /metrics; a round that fails on the disk is tried again."""
    folder = settings.layout.spool(settings.redis_prefix)
    folder.mkdir(parents=True)
    (folder / "spool-999-deadbeef.jsonl").write_bytes(b"\n".join(rows("x1", "x2")) + b'\n{"event_id": "x3", "tr')
    (folder / QUARANTINE).mkdir()  # the disk fails where the torn line has to go
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as client:
        state = client.app.state.echotune
        client.portal.call(replay_spool, state)  # logs the failure, does not raise
        assert state.spool.pending() == 2 and len(state.spool.files()) == 1  # the two whole rows wait
        (folder / QUARANTINE).rmdir()
        client.portal.call(replay_spool, state)
        assert state.spool.files() == []
        metrics = client.get("/metrics").text
    keys = RedisKeys(settings.redis_prefix)
    assert [orjson.loads(f[b"e"])["event_id"] for _, f in redis_client.xrange(keys.feedback_stream()) if b"e" in f] == [
        "x1",
        "x2",
    ]
    assert (folder / QUARANTINE).read_bytes() == b'{"event_id": "x3", "tr\n'
    assert (
        "echotune_feedback_spool_quarantined_total" in metrics
        and "echotune_feedback_spool_quarantine_bytes 23.0" in metrics
    )
    assert (
        "echotune_feedback_spool_pending 0.0" in metrics
        and "echotune_feedback_spool_max_bytes 2.68435456e+08" in metrics
    )


# --- a property over any sequence of appends, torn writes and replays cut short -----------------------
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 4)),  # (op, which API process, rows)
        st.tuples(st.just("tear"), st.just(0), st.just(0)),  # a write cut short (a crash) in the newest spool file
        st.tuples(
            st.just("replay"), st.integers(0, 3), st.just(0)
        ),  # Redis answers that many batches, then goes away again
    ),
    max_size=25,
)


@hypothesis.settings(max_examples=40, deadline=None)  # each example fsyncs: ~2 s
@hypothesis.given(OPERATIONS)
def test_appends_torn_writes_and_interrupted_replays_send_every_event_once(operations):
    """Whatever happens between them, the events that were appended (202) reach the stream exactly once
    each, no fragment of a torn write is sent, and each torn write is quarantined."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "spool"
        writers = [Spool(folder) for _ in range(3)]
        appended, sent, tears = [], [], 0

        class Stream:
            """The stream's append script: takes ``batches`` batches, then raises as a Redis gone away would."""

            def __init__(self, batches: int | None) -> None:
                self.batches = batches

            async def __call__(self, batch: list[bytes]) -> None:
                if self.batches is not None:
                    if self.batches == 0:
                        raise ConnectionError("redis went away")
                    self.batches -= 1
                sent.extend(orjson.loads(row)["event_id"] for row in batch)

        for op, which, n in operations:
            if op == "append":
                ids = [f"e{len(appended) + i}" for i in range(n)]
                writers[which % 3].append(rows(*ids), max_bytes=ROOMY)
                appended += ids
            elif op == "tear" and (unclaimed := [p for p in writers[0].files() if p.name.startswith("spool-")]):
                # what an append cut short by a crash leaves (after its own line break, when a torn line is
                # there already): no newline, no 202; later appends must not glue onto it
                torn = b"" if unclaimed[-1].read_bytes().endswith(b"\n") else b"\n"
                with open(unclaimed[-1], "ab") as handle:
                    handle.write(torn + b'{"event_id": "torn", "us')
                tears += 1
            elif op == "replay":
                with contextlib.suppress(ConnectionError):
                    asyncio.run(writers[0].replay(Stream(which)))
        asyncio.run(writers[0].replay(Stream(None)))  # Redis is back for good

        assert sorted(sent) == sorted(appended) and len(set(sent)) == len(sent)  # each once, none lost, no fragment
        assert writers[0].files() == [] and writers[0].pending() == 0
        quarantine = folder / QUARANTINE
        assert (quarantine.read_bytes().count(b"\n") if quarantine.exists() else 0) == tears


# --- /metrics reads the spool's counters, not its files (issue 23, item 6) -------------------------------
def test_the_spools_counters_follow_appends_replays_quarantines_and_erasures_without_reading_a_file(tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "spool-999-deadbeef.jsonl").write_bytes(rows("old")[0] + b"\n")  # left by an earlier process
    spool = Spool(folder)
    assert spool.counts().pending == 1  # counted once from disk when opened
    spool.append(rows("a", "b"), max_bytes=ROOMY)
    spool.append([orjson.dumps({"event_id": "c", "user_id": "erased-one", "track_id": TRACK, "type": "play"})], ROOMY)
    assert spool.counts().pending == spool.pending() == 4 and spool.counts().size_bytes == spool.size()
    assert spool.remove_user("erased-one") == 1
    assert spool.counts().pending == spool.pending() == 3 and spool.counts().size_bytes == spool.size()
    with open(spool.files()[-1], "ab") as handle:
        handle.write(b"torn\n")  # a line that is no event row, written behind the spool's back: quarantined
    spool.append(rows("d"), max_bytes=ROOMY)

    class NoReading(Spool):
        def files(self):
            raise AssertionError("the counters listed the spool folder")

    counting = spool.counts()
    spool.__class__ = NoReading
    assert spool.counts() == counting  # no listing, no read: the figures are kept in memory
    spool.__class__ = Spool

    recorder = Recorder()
    assert asyncio.run(spool.replay(recorder)) == 4 and sorted(recorder.sent) == ["a", "b", "d", "old"]
    after = spool.counts()
    assert (after.pending, after.size_bytes) == (0, 0) == (spool.pending(), spool.size())
    assert after.quarantined_bytes == spool.quarantined_bytes() == len(b"torn\n")


def test_files_another_process_replayed_leave_the_counts_at_the_next_look(tmp_path):
    spool, other = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")  # two API processes, one folder
    other.append(rows("x", "y"), max_bytes=ROOMY)
    late = Spool(tmp_path / "spool")  # started after: counts the other's file once, from disk
    assert late.counts().pending == 2 and spool.counts().pending == 0
    asyncio.run(other.replay(Recorder()))
    assert late.counts().pending == 2  # nothing read since
    late.forget_gone(late.files())  # the replay task's listing, once a second
    assert late.counts().pending == 0


def test_a_metrics_scrape_reads_no_spool_file(settings, published, monkeypatch):
    clock = ManualClock()
    with TestClient(create_app(settings, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        state = client.app.state.echotune
        state.breaker.failed()  # Redis counts as down: feedback goes to the spool
        assert client.post("/feedback", json=[event("m1"), event("m2"), event("m3")]).json()["spooled"]
        size = state.spool.size()

        def no_listing(*args, **kwargs):
            raise AssertionError("a scrape listed the spool folder")

        monkeypatch.setattr(Spool, "files", no_listing)
        monkeypatch.setattr("serving.spool._count_lines", no_listing)
        metrics = client.get("/metrics").text
        monkeypatch.undo()
    assert "echotune_feedback_spool_pending 3.0" in metrics
    assert f"echotune_feedback_spool_bytes {float(size)}" in metrics


# --- erasure on the replay path (issue 23, item 3) -----------------------------------------------------
def test_spool_replay_drops_events_of_users_erased_since_and_deletes_their_keys(
    settings, published, redis_client, known_user_id
):
    """An event spooled on one host, its user erased through another (whose DELETE cannot touch this
    host's spool, and answered 503 while Redis was down: the erasure is only in the offline log). The
    replay drops it, counts it, names nobody in its log line, and deletes the user's vector."""
    from core.erasure_log import ErasureLog
    from core.tables import OfflineStore

    keys = RedisKeys(settings.redis_prefix)
    erased_user = known_user_id
    assert published.played(erased_user)  # the release left keys of theirs
    clock = ManualClock()
    dropped_before = REGISTRY.get_sample_value("echotune_feedback_spool_dropped_erased_total") or 0.0
    with TestClient(create_app(settings, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        state = client.app.state.echotune
        state.breaker.failed()
        batch = [{"user_id": "kept", "track_id": TRACK, "type": "play", "event_id": "k1"}] + [
            {"user_id": erased_user, "track_id": TRACK, "type": "play", "event_id": f"x{i}"} for i in range(2)
        ]
        assert client.post("/feedback", json=batch).json()["spooled"]
        log = ErasureLog(OfflineStore(settings.layout.tables).erasures.folder)
        log.record_request(log.digest(erased_user))  # what another host's DELETE wrote before Redis failed it
        clock.advance(1.1)
        client.portal.call(replay_spool, state)
        assert state.spool.files() == []
    streamed = [orjson.loads(f[b"e"])["user_id"] for _, f in redis_client.xrange(keys.feedback_stream()) if b"e" in f]
    assert streamed == ["kept"]
    dropped = REGISTRY.get_sample_value("echotune_feedback_spool_dropped_erased_total") - dropped_before
    assert dropped == 2
    assert not [k for k in redis_client.scan_iter(match=f"{keys.root}*", count=1000) if erased_user.encode() in k]
