import pandas as pd
import pytest

from core.ingest.interaction_logs import import_interaction_logs


@pytest.mark.realdata
def test_lastfm_user_artists_imports_as_counts(lastfm_user_artists):
    logs, result = import_interaction_logs([lastfm_user_artists])
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (92_834, 92_834, 0, 0)
    assert result.extra["kind"] == "count" and result.extra["users"] == 1892 and result.extra["items"] == 17_632


@pytest.mark.realdata
def test_hundred_corrupted_lastfm_rows(lastfm_user_artists, tmp_path):
    frame = pd.read_csv(lastfm_user_artists, sep="\t", dtype=str)
    frame.loc[:49, "weight"] = "many"
    frame.loc[50:99, "userID"] = ""
    path = tmp_path / "user_artists.dat"
    frame.to_csv(path, sep="\t", index=False)
    logs, result = import_interaction_logs([path])
    assert result.rejected == 100 and result.accepted == 92_734
    assert result.rejects.reasons() == {"weight": 50, "userID": 50}


def test_columns_kinds_and_timestamps(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,track_id,weight,timestamp\nu1,t1,0.5,2024-01-01T10:00:00Z\nu1,t1,0.5,2024-01-01T10:00:00Z\nu2,t2,-1,2024-01-02\nu3,t3,1,yesterday\n"
    )
    logs, result = import_interaction_logs([path])
    assert result.extra["kind"] == "weight"
    assert (result.accepted, result.duplicates, result.rejected) == (1, 1, 2)
    assert set(result.rejects.reasons()) == {"weight", "timestamp"}


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("who,what\na,b\n")
    with pytest.raises(ValueError, match="no user column"):
        import_interaction_logs([path])
