import json

import numpy as np
import pandas as pd
import pytest

from core.ingest.catalog import build_catalog, upsert_source
from core.ingest.track_files import import_track_files
from core.tables import OfflineStore

pytestmark = pytest.mark.realdata
TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def test_hit_predictor_catalog_imports_with_duplicates_merged(hit_predictor_files):
    tracks, result = import_track_files(hit_predictor_files)
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (41_106, 40_560, 0, 546)
    assert tracks["track_id"].is_unique and tracks["energy"].notna().all()
    assert tracks["track_id"].str.fullmatch(r"[0-9A-Za-z]{22}").all()


def test_hundred_corrupted_rows_are_exactly_the_rejects(hit_predictor_files, tmp_path):
    frame = pd.read_csv(hit_predictor_files[0], dtype=str)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(frame), size=100, replace=False)
    kinds = ["uri", "energy", "tempo", "duration_ms"]
    for i, row in enumerate(rows):
        kind = kinds[i % 4]
        frame.loc[row, {"uri": "uri", "energy": "energy", "tempo": "tempo", "duration_ms": "duration_ms"}[kind]] = {
            "uri": "spotify:track:broken",
            "energy": "1.7",
            "tempo": "fast",
            "duration_ms": "-5",
        }[kind]
    corrupted = tmp_path / "corrupted.csv"
    frame.to_csv(corrupted, index=False)
    tracks, result = import_track_files([corrupted])
    assert result.rejected == 100
    assert result.accepted + result.duplicates == len(frame) - 100
    reasons = result.rejects.frame()
    assert sorted(reasons["row"]) == sorted(rows + 1)
    assert set(result.rejects.reasons()) == {"track_id", "energy", "tempo", "duration_ms"}
    assert reasons["reason"].str.contains("energy: 1.7 is outside").any()


def test_tolerates_common_variants(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text(
        "id,track_name,artists,danceability,energy,year,unrelated\n"
        f"{TRACK},Song,\"['A', 'B']\",0.5,0.7,2019-03-01,x\n"
        f"https://open.spotify.com/track/{TRACK}?si=1,,,,0.8,,y\n"
    )
    api = tmp_path / "b.json"
    api.write_text(
        json.dumps({"audio_features": [{"id": "0eGsygTp906u18L0Oimnem", "energy": 0.2, "tempo": 99.0}, None]})
    )
    tracks, result = import_track_files([csv, api])
    assert (result.read, result.accepted, result.duplicates, result.rejected) == (3, 2, 1, 0)
    row = tracks.set_index("track_id").loc[TRACK]
    assert row["name"] == "Song" and list(row["artists"]) == ["A", "B"] and row["release_year"] == 2019
    assert row["energy"] == pytest.approx(0.7)  # first non-null wins when merging duplicates


def test_upsert_is_idempotent_and_keeps_other_sources(tmp_path, hit_predictor_files):
    store = OfflineStore(tmp_path)
    tracks, _ = import_track_files(hit_predictor_files[:1])
    first = upsert_source(store, "track_files", tracks)
    again = upsert_source(store, "track_files", tracks)
    assert first["new_tracks"] == len(tracks) and again["new_tracks"] == 0
    upsert_source(store, "spotify_history", pd.DataFrame({"track_id": [TRACK], "name": ["Only in history"]}))
    catalog = build_catalog(store)
    assert len(catalog) == len(tracks) + 1
    assert catalog.set_index("track_id").loc[TRACK, "name"] == "Only in history"
