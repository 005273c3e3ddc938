"""The loop's sensors, evaluated for real against the pipeline's stores: what they ask for and why."""

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from core import release
from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream
from core.ingest.service import ingest_track_files
from core.model_registry import CHAMPION, ModelRegistry
from core.tables import OfflineStore
from core.vectorstore import VectorStore
from models.training import train
from pipelines.automation.jobs import REASON_TAG, TRIGGER_TAG, everything_job
from pipelines.definitions import build_defs, resources_from
from serving.main import create_app
from tests.catalog_files import write_new_genre_tracks
from tests.conftest import small_settings
from tests.pipelines.prepared_platform import PreparedPlatform

pytestmark = pytest.mark.slow
KEY = "test-client-key-0123456789"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, redis_url, module_redis_prefix, mlflow_migrated):
    """The whole graph materialized once for the module (version 1 champion, published)."""
    root = tmp_path_factory.mktemp("platform")
    settings = small_settings(root / "home", redis_url, False, module_redis_prefix).model_copy(
        update={"api_keys": f"{KEY}:client", "retrain_after_events": 50}
    )
    mlflow_migrated(settings.mlflow_tracking_uri)
    return PreparedPlatform.materialize(settings, root)


@pytest.fixture
def platform(prepared, tmp_path, redis_prefix):
    """A copy of that platform for this test (its folder, its Dagster instance, its Redis keys), with its definitions."""
    settings, instance = prepared.copy(
        tmp_path / "platform", redis_prefix, api_keys=f"{KEY}:client", retrain_after_events=50
    )
    with instance:
        yield settings, build_defs(settings), instance


def evaluate(defs, instance, name, settings, cursor=None):
    sensor = next(s for s in defs.sensors if s.name == name)
    with dg.build_sensor_context(
        instance=instance, resources=resources_from(settings), cursor=cursor, definitions=defs
    ) as context:
        return sensor.evaluate_tick(context), context.cursor


def test_volume_and_drift_ask_for_a_retrain_saying_why(platform):
    settings, defs, instance = platform
    skipped, _ = evaluate(defs, instance, "retrain_when_needed", settings)
    assert not skipped.run_requests and "retrain at 50" in skipped.skip_message
    # 60 live events after the newest version's data: over the threshold of 50
    store = OfflineStore(settings.layout.tables)
    now = pd.Timestamp(datetime.now(UTC))
    live = pd.DataFrame(
        {
            "event_id": [f"live{i}" for i in range(60)],
            "user_id": "someone",
            "track_id": store.read_tracks()["track_id"].iloc[0],
            "type": "play",
            "timestamp": now,
            "source": "api",
        }
    )
    from core.contracts.events import EVENT_SCHEMA

    store.write_events(live.reindex(columns=EVENT_SCHEMA.names), part="live")
    volume, _ = evaluate(defs, instance, "retrain_when_needed", settings)
    (request,) = volume.run_requests
    assert (
        request.tags[TRIGGER_TAG] == "volume"
        and "60 live events arrived after version 1's training data" in request.tags[REASON_TAG]
    )

    # drift found after the newest version was trained asks too (volume below the threshold now)
    calm = settings.model_copy(update={"retrain_after_events": 10_000})
    instance.report_runless_asset_event(
        dg.AssetMaterialization("feedback_drift", metadata={"drift_exceeded": True, "drift_share": 0.75})
    )
    drift, _ = evaluate(build_defs(calm), instance, "retrain_when_needed", calm)
    (request,) = drift.run_requests
    assert request.tags[TRIGGER_TAG] == "drift" and "drift share 0.75" in request.tags[REASON_TAG]


def test_a_drift_retrain_the_gate_rejected_is_not_asked_for_again_after_every_drain(platform):
    """Regression: while drift lasted, each drain's drift run was newer than the newest (rejected) version,
    so the sensor asked for a retrain after every drain, each one rejected by the gate."""
    settings, _, instance = platform
    calm = settings.model_copy(update={"retrain_after_events": 10_000})
    defs = build_defs(calm)
    registry = ModelRegistry.from_settings(calm)
    tables, training = OfflineStore(calm.layout.tables), resources_from(calm)["training"]
    # version 2, trained by a drift-triggered run and not promoted (version 1 stays champion)
    run = instance.create_run_for_job(
        defs.resolve_job_def("retrain"),
        tags={TRIGGER_TAG: "drift", REASON_TAG: "drift share 0.75"},
        status=dg.DagsterRunStatus.SUCCESS,
    )
    result = train(
        tables.read_interactions(), tables.read_tracks(), training.algorithm, training.params(), k=training.k
    )
    with tempfile.TemporaryDirectory() as tmp:
        record = release.register(
            registry,
            result,
            result.model.save(Path(tmp) / "model"),
            {"trained_until_ms": "0", "dagster_run_id": run.run_id},
        )
    assert registry.alias(CHAMPION) == "1" and record.version == "2"
    instance.report_runless_asset_event(
        dg.AssetMaterialization("feedback_drift", metadata={"drift_exceeded": True, "drift_share": 0.8})
    )
    again, _ = evaluate(defs, instance, "retrain_when_needed", calm)
    assert not again.run_requests and "was not promoted by the gate" in again.skip_message
    # once a version is champion again (the daily retrain, a rollout, a hand move), drift asks as before
    registry.set_alias(CHAMPION, "2")
    instance.report_runless_asset_event(
        dg.AssetMaterialization("feedback_drift", metadata={"drift_exceeded": True, "drift_share": 0.8})
    )
    asked, _ = evaluate(defs, instance, "retrain_when_needed", calm)
    (request,) = asked.run_requests
    assert request.tags[TRIGGER_TAG] == "drift"


def test_drain_runs_for_each_day_in_the_stream(platform):
    settings, defs, instance = platform
    stream = FeedbackStream(redis.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix))
    empty, _ = evaluate(defs, instance, "drain_feedback", settings)
    assert not empty.run_requests and "empty" in empty.skip_message
    (stream_id,) = stream.append(
        [FeedbackEvent(user_id="u1", track_id="4uLU6hMCjMI75M1A2tKUQC", type="play", event_id="d1").stamped()]
    )
    accepted_day = datetime.fromtimestamp(int(stream_id.split("-")[0]) / 1000, tz=UTC).date()
    result, _ = evaluate(defs, instance, "drain_feedback", settings)
    # the day the server accepted the entry, and any day after it up to today (a drain just after midnight)
    assert [r.partition_key for r in result.run_requests][0] == accepted_day.isoformat()
    request = result.run_requests[0]
    assert request.tags[TRIGGER_TAG] == "drain" and "every 300 s" in request.tags[REASON_TAG]


def test_a_champion_moved_by_hand_is_published_and_the_run_says_so(platform):
    settings, defs, instance = platform
    calm, _ = evaluate(defs, instance, "follow_the_champion", settings)
    assert not calm.run_requests
    registry = ModelRegistry.from_settings(settings)
    assert defs.resolve_job_def(everything_job.name).execute_in_process(instance=instance).success  # version 2
    moved_to = "2" if registry.alias(CHAMPION) == "1" else "1"
    registry.set_alias(CHAMPION, moved_to)  # what a data scientist does in the MLflow UI
    moved, _ = evaluate(defs, instance, "follow_the_champion", settings)
    (request,) = moved.run_requests
    assert (
        f"champion moved to version {moved_to} in MLflow" in request.tags[REASON_TAG]
        and "by hand" in request.tags[REASON_TAG]
    )
    assert request.tags["echotune/moved_by"] == "MLflow UI or API"
    run = defs.resolve_job_def("publish_champion").execute_in_process(instance=instance, tags=request.tags)
    assert run.success
    vectors_meta = run.get_asset_materialization_events()[0].materialization.metadata
    assert vectors_meta["champion_version"].value == moved_to and "by hand" in vectors_meta["trigger"].value


def test_new_catalog_tracks_are_served_before_any_retrain(platform, tmp_path):
    settings, defs, instance = platform
    catalog = OfflineStore(settings.layout.tables).read_tracks()
    # three new tracks of a genre nobody has heard of, with audio features: a file a user imports
    base = catalog.iloc[0]
    path = tmp_path / "new.csv"
    new_ids = write_new_genre_tracks(path, duration_ms=int(base["duration_ms"] or 200_000))
    ingest_track_files(OfflineStore(settings.layout.tables), [path])  # `echotune ingest tracks new.csv`

    sensed, cursor = evaluate(defs, instance, "new_catalog_tracks", settings)
    (request,) = sensed.run_requests
    assert "3 catalog tracks that version 1 does not serve" in request.tags[REASON_TAG]
    again, _ = evaluate(defs, instance, "new_catalog_tracks", settings, cursor=cursor)
    assert not again.run_requests  # the same catalog is not extended twice
    assert defs.resolve_job_def("extend_catalog").execute_in_process(instance=instance, tags=request.tags).success

    # the next tick on a changed catalog reads its ids and the version's digest, never the version's vectors
    # (issue 25: at 1M tracks each tick loaded gigabytes from Redis)
    def refuse(*_):
        raise AssertionError("the sensor loaded the whole version")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VectorStore, "load", refuse)
        served, _ = evaluate(defs, instance, "new_catalog_tracks", settings)
    assert not served.run_requests and "serves every catalog track" in served.skip_message

    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as client:
        body = client.get("/recommendations/someone-new", params={"genres": "brand new genre", "count": 5}).json()
    assert sorted(t["track_id"] for t in body["tracks"]) == sorted(new_ids) and body["model_version"] == "1"
    vectors = redis.Redis.from_url(settings.redis_url)
    assert int(vectors.hget(RedisKeys(settings.redis_prefix).model_meta("1"), "catalog_revision")) == 1
    assert np.isfinite([t["score"] for t in body["tracks"]]).all()


def test_the_drift_monitor_reports_in_the_ui_and_checks_the_backlog(platform):
    settings, defs, instance = platform
    run = defs.resolve_job_def("measure_drift").execute_in_process(instance=instance)
    assert run.success
    meta = run.get_asset_materialization_events()[0].materialization.metadata
    # no live feedback yet: nothing to compare, and it says so instead of guessing
    assert meta["drift_measured"].value is False and "too few events" in meta["not_measured_because"].value
    assert meta["reference_events"].value > 0 and meta["stream_backlog"].value == 0
    assert meta["sample_cap_per_window"].value == 20_000 and meta["live_events_compared"].value == 0
    checks = {e.asset_check_key.name: e.passed for e in run.get_asset_check_evaluations()}
    assert checks == {"drift_within_threshold": True, "feedback_backlog_under_threshold": True}


def test_the_drift_monitor_runs_after_a_drain_of_any_day_on_its_own(platform):
    """Regression (issue 21): under eager(), feedback_drift waited until no daily partition of
    feedback_events was missing, which never happens (only days with stream entries are drained), so
    it never ran unless launched by hand."""
    settings, defs, instance = platform
    drift = dg.AssetKey("feedback_drift")
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert quiet.get_num_requested(drift) == 0  # nothing drained yet
    stream = FeedbackStream(redis.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix))
    stream.append(
        [FeedbackEvent(user_id="u1", track_id="4uLU6hMCjMI75M1A2tKUQC", type="play", event_id="d1").stamped()]
    )
    (request,) = evaluate(defs, instance, "drain_feedback", settings)[0].run_requests
    assert (
        defs.resolve_job_def("drain_feedback")
        .execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)
        .success
    )

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    assert after.get_num_requested(drift) == 1 and after.total_requested == 1  # the monitor, nothing else
    assert defs.resolve_job_def("measure_drift").execute_in_process(instance=instance).success
    handled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert handled.get_num_requested(drift) == 0  # once per drain


def test_after_an_erasure_publishing_the_champion_leaves_no_key_naming_the_user(platform):
    """Issue 23: after ``DELETE /users/U``, the publish_champion job (run when the alias moves by hand)
    republished U's played set from the interactions table the champion was trained on."""
    settings, defs, instance = platform
    admin = "test-admin-key-0123456789"
    configured = settings.model_copy(update={"api_keys": f"{KEY}:client,{admin}:admin"})
    user = pd.read_parquet(settings.layout.tables / "interactions.parquet")["user_id"].value_counts().index[0]
    client = redis.Redis.from_url(settings.redis_url)
    root = RedisKeys(settings.redis_prefix).root

    def naming_user() -> list[bytes]:
        return [k for k in client.scan_iter(match=f"{root}*", count=1000) if user.encode() in k]

    assert naming_user()  # the release published their played set and vector
    with TestClient(create_app(configured), headers={"X-API-Key": admin}) as api:
        assert api.delete(f"/users/{user}").status_code == 202
    assert naming_user() == []
    assert defs.resolve_job_def("publish_champion").execute_in_process(instance=instance).success
    assert naming_user() == []


def test_the_retrains_erasure_step_deletes_online_keys_of_an_erasure_redis_never_heard_of(platform):
    """Issue 23: an erasure whose DELETE answered 503 (Redis down) is in the offline log only; the user's
    vector and played set stayed in Redis. The retrain's erasure step deletes every erased subject's keys."""
    settings, defs, instance = platform
    tables = OfflineStore(settings.layout.tables)
    user = pd.read_parquet(settings.layout.tables / "interactions.parquet")["user_id"].value_counts().index[0]
    client = redis.Redis.from_url(settings.redis_url)
    root = RedisKeys(settings.redis_prefix).root
    assert [k for k in client.scan_iter(match=f"{root}*", count=1000) if user.encode() in k]
    subject = tables.erasures.digest(user)
    tables.erasures.record_request(subject)  # what the DELETE wrote before Redis failed it

    job = defs.get_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("user_erasures")])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["deleted_redis_keys"].value >= 2  # a vector and a played set at least
    assert [k for k in client.scan_iter(match=f"{root}*", count=1000) if user.encode() in k] == []
    assert "redis_online_state" in [e.place for e in tables.erasures.receipt(subject)]
