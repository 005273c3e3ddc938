"""Ingestion through Dagster: real files, the blocking rejects check, the Web API fake, live feedback."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream
from pipelines.definitions import build_defs, resources_from
from pipelines.resources import SpotifyApiResource
from tests.conftest import SHARED_DATA
from tests.fakes.spotify_api import FakeSpotify

HITS = SHARED_DATA / "spotify-hit-predictor"
LASTFM = SHARED_DATA / "hetrec-lastfm" / "user_artists.dat"


def materialize(settings, names, partition_key=None, resources=None):
    defs = build_defs(settings)
    return dg.materialize(
        defs.assets,
        selection=names,
        resources={**resources_from(settings), **(resources or {})},
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=partition_key,
        raise_on_error=False,
    )


def metadata(result, name):
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == name]
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


@pytest.mark.slow
@pytest.mark.realdata
def test_real_catalog_and_lastfm_log_through_dagster(settings):
    if not HITS.exists() or not LASTFM.exists():
        pytest.skip(f"real data not present under {SHARED_DATA}")
    configured = settings.model_copy(
        update={
            "sources": "track_files,interaction_logs",
            "track_files": str(HITS / "*.csv"),
            "interaction_files": str(LASTFM),
        }
    )
    result = materialize(configured, ["track_files", "interaction_logs", "tracks"])
    assert result.success
    files = metadata(result, "track_files")
    assert (files["read"], files["accepted"], files["rejected"], files["duplicates"]) == (41_106, 40_560, 0, 546)
    logs = metadata(result, "interaction_logs")
    assert (logs["read"], logs["accepted"], logs["rejected"]) == (92_834, 92_834, 0)
    assert metadata(result, "tracks")["dagster/row_count"] == 40_560
    checks = {e.asset_check_key.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"track_files": True, "interaction_logs": True}


def test_too_many_rejects_fail_the_check_and_block_downstream(settings, tmp_path):
    bad = tmp_path / "tracks.csv"
    rows = (
        ["id,energy"]
        + [f"{i:04d}" + "A" * 18 + ",0.5" for i in range(90)]
        + [f"{i:04d}" + "B" * 18 + ",7" for i in range(10)]
    )
    bad.write_text("\n".join(rows) + "\n")
    configured = settings.model_copy(
        update={"sources": "track_files", "track_files": str(bad), "reject_threshold": 0.05}
    )
    result = materialize(configured, ["track_files", "tracks"])
    assert not result.success
    meta = metadata(result, "track_files")
    assert (meta["accepted"], meta["rejected"]) == (90, 10)  # the valid rows are stored anyway
    assert [e.passed for e in result.get_asset_check_evaluations()] == [False]
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "tracks"]
    rejects = pd.read_parquet(configured.layout.tables / "rejects" / "track_files.parquet")
    assert len(rejects) == 10 and rejects["reason"].str.startswith("energy: 7.0 is outside").all()


def test_web_api_without_audio_feature_access(settings):
    with FakeSpotify() as fake:
        for i in range(30):
            fake.add(f"{i:03d}" + "C" * 19, f"Song {i}", "111" + "D" * 19, "Band")
        fake.features_forbidden = True
        configured = settings.model_copy(update={"sources": "synthetic,spotify_api", "synth_tracks": 60})
        # the synthetic catalog's ids are unknown to the fake: pretend a history referenced these tracks
        from core.ingest.catalog import upsert_source
        from core.tables import OfflineStore

        upsert_source(
            OfflineStore(configured.layout.tables), "spotify_history", pd.DataFrame({"track_id": list(fake.tracks)})
        )
        spotify = SpotifyApiResource(
            client_id="test-id",
            client_secret="test-secret",
            base_url=fake.url,
            accounts_url=fake.url,
            max_tracks=configured.spotify_max_tracks,
        )
        result = materialize(
            configured, ["synthetic_catalog", "spotify_api_tracks", "tracks"], resources={"spotify": spotify}
        )
    assert result.success
    meta = metadata(result, "spotify_api_tracks")
    assert meta["accepted"] == 30 and meta["audio_features_available"] is False
    assert "403" in meta["audio_features_error"]
    assert meta["not_found"] == 60  # the synthetic ids
    catalog = pd.read_parquet(configured.layout.tables / "tracks.parquet").set_index("track_id")
    assert catalog.loc["000" + "C" * 19, "name"] == "Song 0" and pd.isna(catalog.loc["000" + "C" * 19, "energy"])


def test_live_feedback_partition(settings, redis_client):
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    events = [
        FeedbackEvent(user_id="u1", track_id="4uLU6hMCjMI75M1A2tKUQC", type="like", event_id=f"x{i}").stamped()
        for i in range(5)
    ]
    stream_ids = stream.append(events)
    # the day the server accepted them (stream ids are acceptance ms): reading the clock here instead
    # would name the next day when the events were appended just before midnight
    day = datetime.fromtimestamp(int(stream_ids[0].split("-")[0]) / 1000, tz=UTC).date().isoformat()
    result = materialize(settings, ["feedback_events"], partition_key=day)
    assert result.success
    assert metadata(result, "feedback_events")["accepted"] == 5
    assert stream.length() == 0  # persisted, no consumer group waiting: trimmed
