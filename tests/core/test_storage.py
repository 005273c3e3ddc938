"""Shared storage: the offline tables, the erasure log and MLflow's artifacts on a real S3-compatible
server (SeaweedFS, see tests/object_storage.py), and local folders as the unchanged default."""

import os
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from core import release
from core.ingest.pseudonyms import load_or_create_key
from core.model_registry import CHALLENGER, ModelRegistry
from core.settings import Settings
from core.storage import is_remote, local_file
from core.synthetic import SyntheticWorld
from core.tables import OfflineStore
from models.training import train
from tests.models.conftest import block_matrix
from tests.object_storage import BUCKET


def _shared(settings: Settings, storage_url: str, s3_server) -> Settings:
    return settings.model_copy(update={"storage_url": storage_url, "s3_endpoint_url": s3_server.endpoint_url})


def _prefix(storage_url: str) -> str:
    return storage_url.removeprefix(f"s3://{BUCKET}/")


def test_local_paths_stay_the_default(tmp_path):
    settings = Settings(home=tmp_path)
    assert settings.data_location == str(tmp_path / "data") and settings.layout.tables == tmp_path / "data" / "tables"
    assert settings.mlflow_artifact_location == str(tmp_path / "mlruns" / "artifacts")
    assert settings.layout.serving_cache("p") == tmp_path / "var" / "serving_cache" / "p"
    # a local storage_url (a mount every host shares) is resolved against home and holds MLflow's artifacts too
    mounted = Settings(home=tmp_path, storage_url="shared")
    assert (
        mounted.layout.tables == tmp_path / "shared" / "tables"
        and mounted.mlflow_artifact_location == f"{tmp_path / 'shared'}/mlflow"
    )


def test_remote_layout_keeps_runtime_state_local(tmp_path):
    settings = Settings(home=tmp_path, storage_url="s3://bucket/prefix/", s3_endpoint_url="http://127.0.0.1:1")
    tables = settings.layout.tables
    assert (
        is_remote(tables)
        and str(tables) == "s3://bucket/prefix/tables"
        and tables.storage_options["endpoint_url"] == "http://127.0.0.1:1"
    )
    assert settings.mlflow_artifact_location == "s3://bucket/prefix/mlflow"
    assert (
        str(settings.layout.serving_cache("p")) == "s3://bucket/prefix/serving_cache/p"
    )  # a new host finds the last model
    assert (
        settings.layout.spool("p") == tmp_path / "var" / "spool" / "p"
        and settings.layout.redis == tmp_path / "var" / "redis"
    )


@pytest.mark.slow
def test_tables_round_trip_through_s3(tmp_path, storage_url, s3_server):
    settings = _shared(Settings(home=tmp_path), storage_url, s3_server)
    store = OfflineStore(settings.layout.tables)
    world = SyntheticWorld.generate(200, 30, seed=3)
    events = world.events(2_000, days=3, end=date(2026, 1, 10))  # a fixed end: partitions do not follow the clock
    store.write_tracks(world.tracks)
    written = store.write_events(events, part="synthetic")
    assert sum(written.values()) == len(events) and len(written) >= 2

    assert len(store.read_tracks()) == 200 and set(store.read_tracks()["track_id"]) == set(world.tracks["track_id"])
    back = store.read_events()
    assert len(back) == len(events) and set(back["event_id"]) == set(events["event_id"])
    last_day = max(written)
    assert len(store.read_events(days=[last_day])) == written[last_day]
    assert store.count_events_after(0, part="synthetic") == len(events)
    assert store.write_events(events, part="synthetic", merge=True) == dict.fromkeys(
        written, 0
    )  # a re-import adds nothing

    store.write_interactions(pd.DataFrame({"user_id": ["u1"], "item_id": ["t1"], "weight": [1.5]}))
    assert store.read_interactions().to_dict("records") == [{"user_id": "u1", "item_id": "t1", "weight": 1.5}]

    # the erasure log (and its digest key) is shared too: an erased user's rows are never written again
    erased = str(events["user_id"].iloc[0])
    store.erasures.record_request(store.erasures.digest(erased))
    other_host = OfflineStore(settings.layout.tables)
    assert other_host.erasures.erased_among([erased, "someone-else"]) == {erased}
    other_host.remove_event_part("synthetic")
    assert other_host.read_events().empty
    other_host.write_events(events, part="synthetic")
    assert erased not in set(other_host.read_events()["user_id"])

    keys = s3_server.keys(_prefix(storage_url))
    assert any(k.endswith("/tables/tracks.parquet") for k in keys) and any("/tables/erasures/" in k for k in keys)
    assert not (tmp_path / "data").exists()  # nothing on this host's disk


@pytest.mark.slow
def test_a_key_in_object_storage_is_created_once(storage_url, s3_server):
    """Two hosts creating the erasure-log key at once must agree: the first writer wins."""
    settings = Settings(storage_url=storage_url, s3_endpoint_url=s3_server.endpoint_url)
    path = settings.layout.tables / "erasures" / ".key"
    first = load_or_create_key(path)
    with pytest.raises(OSError):  # what a second, racing creator meets
        with path.open("xb") as handle:
            handle.write(b"00" * 32)
    assert load_or_create_key(path) == first and len(first) == 32


@pytest.mark.slow
def test_mlflow_model_logged_and_loaded_with_artifacts_on_s3(
    tmp_path, storage_url, s3_server, monkeypatch, mlflow_migrated
):
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # set by the registry below; put back after
    settings = _shared(
        Settings(
            home=tmp_path,
            mlflow_tracking_uri=mlflow_migrated(f"sqlite:///{tmp_path / 'mlflow.db'}"),
            mlflow_experiment="storage-test",
            registered_model="storage-model",
        ),
        storage_url,
        s3_server,
    )
    registry = ModelRegistry.from_settings(settings)
    result = train(block_matrix().to_frame(), None, "lowrank_ease", {"dimensions": 4}, k=5)
    version = release.register(
        registry, result, result.model.save(tmp_path / "model"), {"trained_until_ms": "1000"}
    ).version
    assert registry.alias(CHALLENGER) == version

    source = registry.client.get_model_version_download_uri(registry.name, version)
    assert source.startswith(f"{storage_url}/mlflow/")
    assert any(k.endswith("model.json") for k in s3_server.keys(f"{_prefix(storage_url)}/mlflow/"))

    loaded = mlflow.pyfunc.load_model(source)  # MLflow reads it back from the S3 server
    users = [str(u) for u in result.model.user_ids[:3]]
    ranked = loaded.predict(pd.DataFrame({"user_id": users}), params={"k": 4})
    assert len(ranked) == 12 and set(ranked["user_id"]) == set(users)
    folder = registry.download(version, tmp_path / "download")
    assert (folder / "model.json").exists()

    # issue 22: the API's model cache opened the registry without the S3 endpoint (AWS asked instead)
    from serving.model_cache import released_index

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    assert released_index(settings, version) is None  # released without an index (a small catalog)
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == settings.s3_endpoint_url

    report = settings.layout.reports / "exp-a"
    (report / "summary.json").write_text('{"verdict": "ship"}')
    registry.log_report(version, report, "experiments/exp-a")  # a report in shared storage reaches the run
    run_id = registry.client.get_model_version(registry.name, version).run_id
    assert [a.path for a in registry.client.list_artifacts(run_id, "experiments/exp-a")] == [
        "experiments/exp-a/summary.json"
    ]

    registry.delete_version(version)  # retention deletes the artifacts on the server, not only the record
    assert not [k for k in s3_server.keys(f"{_prefix(storage_url)}/mlflow/") if k.endswith("model.json")]
    assert np.isfinite(ranked["score"]).all() and not Path(tmp_path / "mlruns").exists()


def test_an_experiment_keeps_its_artifact_root_and_says_so(tmp_path, caplog, mlflow_migrated):
    """Setting ECHOTUNE_STORAGE_URL on an existing tracking store does not move an experiment's
    artifacts (MLflow fixes them at creation): the registry warns, naming the setting that helps."""
    tracking = mlflow_migrated(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ModelRegistry.open(tracking, tmp_path / "artifacts", "moved", "moved-model")
    ModelRegistry.open(tracking, "s3://bucket/prefix/mlflow", "moved", "moved-model")
    assert "keeps its artifacts at file://" in caplog.text and "ECHOTUNE_MLFLOW_EXPERIMENT" in caplog.text


@pytest.mark.slow
def test_writers_that_only_take_a_file_name_upload_through_a_local_file(tmp_path, storage_url, s3_server):
    """Evidently's save_html (drift reports) takes a file name: it writes a local file that is uploaded
    when it is whole; on this host the path is used as it is."""
    folder = Settings(storage_url=storage_url, s3_endpoint_url=s3_server.endpoint_url).layout.reports / "drift"
    with local_file(folder / "drift-1.html") as local:
        assert not is_remote(local)
        local.write_text("<html>drift</html>")
        assert not (folder / "drift-1.html").exists()  # nothing half-written is visible
    assert (folder / "drift-1.html").read_text() == "<html>drift</html>"
    with pytest.raises(RuntimeError), local_file(folder / "drift-2.html") as local:
        local.write_text("<html>half")
        raise RuntimeError("the writer failed")
    assert [p.name for p in folder.glob("*.html")] == ["drift-1.html"]
    with local_file(tmp_path / "here" / "drift.html") as local:
        assert local == tmp_path / "here" / "drift.html" and local.parent.is_dir()
