"""GDPR erasure in the offline store: an erased user's rows go from every table, nobody else's."""

import pandas as pd
import pyarrow as pa

from core.contracts.events import EVENT_SCHEMA
from core.erasure import erase_users
from core.ingest.interaction_logs import LOG_SCHEMA
from core.ingest.result import REJECTS_SCHEMA
from core.tables import OfflineStore, write_parquet_atomic


def _events(rows):
    frame = pd.DataFrame(
        [{"event_id": f"e{i}", "user_id": user, "track_id": f"t{i}", "type": "play",
          "timestamp": pd.Timestamp(when, tz="UTC")} for i, (user, when) in enumerate(rows)]
    )  # fmt: skip
    for name in EVENT_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    return frame


def test_erasure_removes_the_users_rows_up_to_the_request_and_nothing_else(tmp_path):
    store = OfflineStore(tmp_path)
    store.write_events(_events([("gone", "2026-01-01"), ("kept", "2026-01-01"), ("gone", "2026-01-02"), ("gone", "2026-03-01")]), part="live")
    logs = pa.table({"user_id": ["gone", "kept"], "item_id": ["a", "a"], "value": [3.0, 4.0], "kind": ["count", "count"],
                     "timestamp": pa.array([None, None], pa.timestamp("ms", tz="UTC"))}, schema=LOG_SCHEMA)  # fmt: skip
    write_parquet_atomic(logs, store.interaction_source_path("lastfm"))
    rejects = pa.table({"source": ["live"] * 2, "file": ["f"] * 2, "row": [1, 2], "reason": ["bad type"] * 2,
                        "raw": ['{"user_id": "gone", "type": "x"}', '{"user_id": "kept", "type": "x"}']}, schema=REJECTS_SCHEMA)  # fmt: skip
    write_parquet_atomic(rejects, store.rejects_path("live"))

    requested = pd.Timestamp("2026-02-01", tz="UTC").timestamp()
    deleted = erase_users(store, {"gone": requested})

    assert deleted == {"events": 2, "interaction_logs": 1, "interactions": 0, "rejects": 1}
    events = store.read_events()
    # what the user did after asking to be erased is new activity, and stays
    assert sorted(zip(events["user_id"], events["timestamp"].dt.strftime("%Y-%m-%d"))) == [("gone", "2026-03-01"), ("kept", "2026-01-01")]
    assert pd.read_parquet(store.interaction_source_path("lastfm"))["user_id"].tolist() == ["kept"]
    assert pd.read_parquet(store.rejects_path("live"))["row"].tolist() == [2]
    # applying it again finds nothing left to delete and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert erase_users(store, {"gone": requested}) == {"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")} == before


def test_no_erasures_touch_nothing(tmp_path):
    store = OfflineStore(tmp_path)
    store.write_events(_events([("kept", "2026-01-01")]), part="live")
    assert erase_users(store, {}) == {"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}
    assert len(store.read_events()) == 1
