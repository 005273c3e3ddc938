"""Appending events page by page: each id stored once, checked against a plain set; nothing swapped in
when the block fails."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.event_files import SeenIds, _member, audit_event_file
from core.tables import OfflineStore


def test_seen_ids_agree_with_a_set_across_pages():
    rng = np.random.default_rng(0)
    seen, reference = SeenIds(), set()
    for _ in range(40):  # runs of many sizes get merged on the way
        ids = np.array([f"id-{i}" for i in rng.integers(0, 3_000, size=int(rng.integers(1, 400)))], dtype=object)
        expected = []
        for i in ids:
            expected.append(i not in reference)
            reference.add(i)
        assert seen.take(ids).tolist() == expected
    assert len(seen) == len(reference)


def test_an_id_sharing_one_digest_half_is_not_a_duplicate():
    run_first, run_second = np.array([5, 7, 7, 9], dtype=np.uint64), np.array([1, 2, 3, 4], dtype=np.uint64)
    found = _member(
        run_first, run_second, np.array([7, 7, 7, 8], dtype=np.uint64), np.array([3, 2, 9, 1], dtype=np.uint64)
    )
    assert found.tolist() == [True, True, False, False]


def _events(ids, day="2025-03-01"):
    return pd.DataFrame(
        {
            "event_id": ids,
            "user_id": "u1",
            "track_id": "t1",
            "type": "play",
            "timestamp": pd.Timestamp(f"{day} 10:00", tz="UTC"),
            "source": "api",
        }
    )


def test_appending_merges_with_what_is_stored_and_a_failed_block_changes_nothing(tmp_path):
    store = OfflineStore(tmp_path)
    with store.append_events("live") as out:
        out.add(_events(["a", "b"]))
        out.add(_events(["b", "c"]))
    assert out.added == {"2025-03-01": 3} and out.duplicates == 1
    with store.append_events("live") as out:
        out.add(_events(["c", "d"]))
        out.add(_events(["e"], day="2025-03-02"))
    assert out.added == {"2025-03-01": 1, "2025-03-02": 1}
    assert sorted(store.read_event_part("2025-03-01", "live")["event_id"]) == ["a", "b", "c", "d"]

    with pytest.raises(RuntimeError), store.append_events("live") as out:
        out.add(_events(["f"]))
        raise RuntimeError("the drain died mid-way")
    assert sorted(store.read_event_part("2025-03-01", "live")["event_id"]) == ["a", "b", "c", "d"]
    assert not list(store.event_partition("2025-03-01").glob(".*.tmp"))  # no temporary file left behind


def test_reading_events_since_a_day_reads_only_what_it_needs(tmp_path):
    store = OfflineStore(tmp_path)
    store.write_events(
        pd.concat([_events(["old"], "2025-02-27"), _events(["mid"], "2025-03-01"), _events(["new"], "2025-03-02")]),
        part="live",
    )
    store.write_events(
        pd.concat([_events(["bulk-feb"], "2025-02-28"), _events(["bulk-mar"], "2025-03-05")]),
        part="history",
        by="month",
    )
    assert store.read_events(since="2025-03-01")["event_id"].tolist() == ["mid", "new", "bulk-mar"]
    assert len(store.read_events()) == 5


def test_an_event_file_is_audited_batch_by_batch(tmp_path):
    path = tmp_path / "live.parquet"  # written by hand: the event schema itself refuses a missing user_id
    pq.write_table(
        pa.table({"event_id": ["a", "b", "a", "c"], "user_id": ["u1", "u1", "u1", None]}), path, row_group_size=2
    )
    assert audit_event_file(path, ["event_id", "user_id"]) == {"rows": 4, "missing_fields": 1, "duplicate_ids": 1}
    assert audit_event_file(tmp_path / "absent.parquet", ["event_id"]) == {
        "rows": 0,
        "missing_fields": 0,
        "duplicate_ids": 0,
    }
