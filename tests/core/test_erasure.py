"""GDPR erasure in the offline store: an erased user's rows go from every table, nobody else's."""

import pandas as pd
import pyarrow as pa

from core.contracts.events import EVENT_SCHEMA
from core.erasure import erase_users
from core.erasure_log import ErasureLog
from core.ingest.interaction_logs import LOG_SCHEMA
from core.ingest.result import REJECTS_SCHEMA
from core.parquet_files import write_parquet_atomic
from core.tables import OfflineStore


def _events(rows):
    frame = pd.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "user_id": user,
                "track_id": f"t{i}",
                "type": "play",
                "timestamp": pd.Timestamp(when, tz="UTC"),
            }
            for i, (user, when) in enumerate(rows)
        ]
    )
    for name in EVENT_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    return frame


def test_erasure_removes_every_row_of_the_user_and_nothing_else(tmp_path):
    store = OfflineStore(tmp_path)
    store.write_events(
        _events([("gone", "2026-01-01"), ("kept", "2026-01-01"), ("gone", "2026-01-02"), ("gone", "2026-03-01")]),
        part="live",
    )
    logs = pa.table(
        {
            "user_id": ["gone", "kept"],
            "item_id": ["a", "a"],
            "value": [3.0, 4.0],
            "kind": ["count", "count"],
            "timestamp": pa.array([None, None], pa.timestamp("ms", tz="UTC")),
        },
        schema=LOG_SCHEMA,
    )
    write_parquet_atomic(logs, store.interaction_source_path("lastfm"))
    rejects = pa.table(
        {
            "source": ["live"] * 2,
            "file": ["f"] * 2,
            "row": [1, 2],
            "reason": ["bad type"] * 2,
            "raw": ['{"user_id": "gone", "type": "x"}', '{"user_id": "kept", "type": "x"}'],
            "user_id": [None, None],  # a live stream's reject names its user in the raw row only
        },
        schema=REJECTS_SCHEMA,
    )
    write_parquet_atomic(rejects, store.rejects_path("live"))

    gone = store.erasures.digest("gone")
    deleted, per_user = erase_users(store, {gone})

    # an erased user stays erased: rows dated after the request go too (regression: they were kept,
    # and events posted after a DELETE brought the user back into training)
    assert deleted == {"events": 3, "interaction_logs": 1, "interactions": 0, "rejects": 1}
    assert per_user == {gone: {"events": 3, "interaction_logs": 1, "rejects": 1}}
    events = store.read_events()
    assert list(zip(events["user_id"], events["timestamp"].dt.strftime("%Y-%m-%d"))) == [("kept", "2026-01-01")]
    assert pd.read_parquet(store.interaction_source_path("lastfm"))["user_id"].tolist() == ["kept"]
    assert pd.read_parquet(store.rejects_path("live"))["row"].tolist() == [2]
    # applying it again finds nothing left to delete and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert erase_users(store, {gone}) == ({"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}, {})
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")} == before


def test_no_erasures_touch_nothing(tmp_path):
    store = OfflineStore(tmp_path)
    store.write_events(_events([("kept", "2026-01-01")]), part="live")
    assert erase_users(store, {}) == ({"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}, {})
    assert len(store.read_events()) == 1


def test_the_erasure_log_is_append_only_holds_no_id_and_gives_a_receipt(tmp_path):
    log = ErasureLog(tmp_path / "erasures")
    subject = log.digest("alice@example.com")
    assert subject.startswith("e_") and subject == ErasureLog(tmp_path / "erasures").digest("alice@example.com")
    assert log.subjects() == {} and log.receipt(subject) == []
    at = log.record_request(subject, at=1_767_225_600.0)
    log.append(subject, [("redis_online_state", 4, None), ("feedback_stream", 2, "entries not yet drained")], at=at + 1)
    log.record_request(subject, at=at + 5)  # asked twice: the first request is the one that counts
    files = sorted((tmp_path / "erasures").glob("*.parquet"))
    assert len(files) == 3  # one file per append; nothing rewritten
    assert not any(b"alice" in f.read_bytes() for f in files)  # a digest, never the id
    assert ErasureLog(tmp_path / "erasures").subjects() == {subject: at}
    assert log.erased_among(["alice@example.com", "bob"]) == {"alice@example.com"}
    receipt = log.receipt(subject)
    assert [(e.place, e.removed) for e in receipt] == [
        ("request", None),
        ("redis_online_state", 4),
        ("feedback_stream", 2),
        ("request", None),
    ]
    assert receipt[2].detail == "entries not yet drained" and receipt[1].at == at + 1


def test_no_writer_stores_rows_of_an_erased_user(tmp_path):
    store = OfflineStore(tmp_path)
    store.erasures.record_request(store.erasures.digest("gone"))
    added = store.write_events(_events([("gone", "2026-01-01"), ("kept", "2026-01-02")]), part="live")
    assert sum(added.values()) == 1 and store.read_events()["user_id"].tolist() == ["kept"]
    logs = pd.DataFrame(
        {"user_id": ["gone", "kept"], "item_id": ["a", "a"], "value": [3.0, 4.0], "kind": "count", "timestamp": pd.NaT}
    )
    assert store.write_interaction_source("lastfm", logs, LOG_SCHEMA) == 1
    assert pd.read_parquet(store.interaction_source_path("lastfm"))["user_id"].tolist() == ["kept"]


def test_forget_online_deletes_every_key_family_of_every_erased_subject(redis_client, redis_prefix, tmp_path):
    """The retrain's erasure step (issue 23): every key that names an erased user goes, for every subject
    the log holds (one erased long ago whose DELETE found Redis down included), nobody else's."""
    from core.contracts.redis_keys import RedisKeys
    from core.erasure import forget_online

    keys, log = RedisKeys(redis_prefix), ErasureLog(tmp_path / "erasures")
    for user in ("old-gone", "new-gone", "kept"):
        for key in keys.user_keys(user, ["1", "2"]):
            redis_client.set(key, "x")
    assert keys.user_of_key(keys.user_played("new-gone")) == "new-gone"
    assert keys.user_of_key(keys.user_vector("2", "old-gone")) == "old-gone"
    assert keys.user_of_key(keys.model_meta("2")) is None and keys.user_of_key(keys.erased_users()) is None
    log.record_request(log.digest("old-gone"), at=1.0)
    log.record_request(log.digest("new-gone"))
    families = len(keys.user_keys("x", ["1", "2"]))

    forgotten = forget_online(redis_client, keys, log, log.subjects())

    assert forgotten == {log.digest("old-gone"): families, log.digest("new-gone"): families}
    left = {k.decode() for k in redis_client.scan_iter(match=f"{keys.root}*", count=1000)}
    assert left == set(keys.user_keys("kept", ["1", "2"]))
    assert forget_online(redis_client, keys, log, log.subjects()) == {}  # nothing left to delete
