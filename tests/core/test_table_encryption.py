"""Encryption at rest of the offline tables (issue 23): with ECHOTUNE_TABLE_ENCRYPTION_KEY set, every
table the store writes is Parquet-encrypted and unreadable without the key; the store reads it back;
a plain file written before the key was set still reads; a malformed key is refused naming the setting."""

from __future__ import annotations

import base64

import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from core.tables import OfflineStore

LISTENER = "listener-with-a-name-0001"


def _events(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [LISTENER] * n,
            "track_id": ["4uLU6hMCjMI75M1A2tKUQC"] * n,
            "type": ["track_completed"] * n,
            "timestamp": pd.Timestamp("2026-03-01T12:00:00Z") + pd.to_timedelta(range(n), unit="min"),
        }
    )


def unreadable_without_the_key(path, user_id: str = LISTENER) -> None:
    """``path`` does not open without the key, and ``user_id`` is nowhere in its bytes."""
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(path)
    assert user_id.encode() not in path.read_bytes(), f"{path.name} holds {user_id} in the clear"


def test_every_table_with_user_rows_is_unreadable_without_the_key_and_reads_back_with_it(
    tmp_path, table_encryption_key
):
    table_encryption_key()
    store = OfflineStore(tmp_path / "tables")
    store.write_events(_events(), part="synthetic")
    with store.append_events("live") as out:
        out.add(_events(5).assign(event_id=lambda f: "live-" + f["event_id"]))
    store.write_interactions(pd.DataFrame({"user_id": [LISTENER], "item_id": ["t1"], "weight": [1.0]}))
    store.erasures.record_request(store.erasures.digest("someone-erased-0001"))

    files = sorted((tmp_path / "tables").rglob("*.parquet"))
    assert {f.name for f in files} >= {"synthetic.parquet", "live.parquet", "interactions.parquet"}
    assert any(f.parent.name == "erasures" for f in files)
    for path in files:
        unreadable_without_the_key(path)
    assert len(store.read_events()) == 25 and set(store.read_events()["user_id"]) == {LISTENER}
    assert len(OfflineStore(tmp_path / "tables").erasures.subjects()) == 1
    assert store.read_interactions()["user_id"].tolist() == [LISTENER]
    assert store.count_events_after(0) == 5  # the multi-file dataset read decrypts too

    table_encryption_key()  # another key: the files do not open
    with pytest.raises(Exception, match="another master key"):
        store.read_interactions()


def test_a_plain_table_from_before_the_key_still_reads_and_is_encrypted_when_rewritten(tmp_path, table_encryption_key):
    store = OfflineStore(tmp_path / "tables")
    store.write_events(_events(), part="synthetic")
    plain = next((tmp_path / "tables").rglob("synthetic.parquet"))
    assert pq.read_table(plain).num_rows == 20  # no key yet: a plain file

    table_encryption_key()
    assert len(store.read_events()) == 20
    store.write_events(_events(), part="synthetic")
    unreadable_without_the_key(plain)


@pytest.mark.parametrize(
    "value, problem", [("not base64!", "must be base64"), (base64.b64encode(b"short").decode(), "32 bytes")]
)
def test_a_malformed_key_is_refused_naming_the_setting(tmp_path, value, problem):
    with pytest.raises(ValueError, match="ECHOTUNE_TABLE_ENCRYPTION_KEY") as refused:
        Settings(home=tmp_path, table_encryption_key=value)
    assert problem in str(refused.value)
