"""Stories of the loop: each starts what a user starts (a real Redis, MLflow and parquet in a temporary
home, the API, the feedback worker where it matters, Dagster's sensors and automation conditions
evaluated by Dagster's own helpers on a real instance, and the runs they ask for) and walks one path to
the outcome the user sees."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from core.clock import ManualClock
from core.contracts import FeedbackEvent
from core.feedback_stream import encode
from core.model_registry import CHAMPION
from core.settings import get_settings
from echotune.cli import main
from pipelines.automation.jobs import REASON_TAG, TRIGGER_TAG, everything_job
from pipelines.definitions import build_defs
from serving.main import create_app
from serving.worker import FeedbackWorker
from tests.catalog_files import write_new_genre_tracks
from tests.serving.conftest import drain
from tests.stories.loop_support import CLIENT_KEY, Loop
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def settings(settings, mlflow_migrated):
    """The shared small settings, an API key, and the volume trigger out of reach: whatever retrains
    here does it for its own reason. MLflow's tables exist already (a first run on a fresh folder is
    tests/pipelines/test_pipeline.py's subject, not these stories')."""
    mlflow_migrated(settings.mlflow_tracking_uri)
    # direct releases (ECHOTUNE_ROLLOUT=direct): these stories follow a retrain to what the API serves;
    # the canary path between them is tests/stories/test_rollout.py's subject
    return settings.model_copy(
        update={"api_keys": f"{CLIENT_KEY}:client", "retrain_after_events": 10**9, "rollout": "direct"}
    )


def api(settings) -> TestClient:
    return TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY})


# --- (a) drains across midnight ------------------------------------------------------------------
def accept_at(loop: Loop, clock: ManualClock, n: int) -> list[str]:
    """``n`` events accepted one second apart from the clock's time: each the entry the API appends
    (core.feedback_stream.encode), with the id Redis gives it, its acceptance time in ms. (Redis stamps
    ids with its own clock, which a test cannot move across midnight; this is the id it would give.)"""
    ids = []
    for i in range(n):
        when = datetime.fromtimestamp(clock.now(), tz=UTC)
        event = FeedbackEvent(
            user_id=f"night-owl-{i % 3}",
            track_id="4uLU6hMCjMI75M1A2tKUQC",
            type="play",
            event_id=f"night-{i}",
            timestamp=when,
        )
        loop.redis.xadd(loop.keys.feedback_stream(), {"e": encode(event)}, id=f"{int(clock.now() * 1000)}-0")
        ids.append(event.event_id)
        clock.advance(1)
    return ids


@pytest.mark.parametrize("order", ["as asked", "newest first"])
def test_drains_across_midnight_keep_every_event_in_either_order(settings, order):
    """Events accepted on both sides of midnight; the drain sensor asks for a run per day, oldest first,
    and the run queue may start them in either order (or a catch-up after downtime does): every event is
    stored in the day it was accepted, nothing leaves the stream before it is stored."""
    loop = Loop(settings, build_defs(settings), dg.DagsterInstance.ephemeral())
    clock = ManualClock(at=(MIDNIGHT - timedelta(seconds=3)).timestamp())
    accepted = accept_at(loop, clock, 6)  # 23:59:57 .. 00:00:02
    stream = loop.keys.feedback_stream()

    asked = loop.tick("drain_feedback").run_requests
    assert [r.partition_key for r in asked] == ["2026-03-01", "2026-03-02"]
    first, second = asked if order == "as asked" else asked[::-1]
    loop.launch(first, "drain_feedback")
    if order == "newest first":
        assert loop.redis.xlen(stream) == 6  # the new day is stored, the old one is not: nothing may leave yet
        assert [r.partition_key for r in loop.tick("drain_feedback").run_requests] == ["2026-03-01"]
    loop.launch(second, "drain_feedback")

    stored = loop.store.read_events()
    assert sorted(stored["event_id"]) == sorted(accepted)  # count in = count persisted
    assert stored.groupby(stored["timestamp"].dt.strftime("%Y-%m-%d")).size().to_dict() == {
        "2026-03-01": 3,
        "2026-03-02": 3,
    }
    assert loop.redis.xlen(stream) == 0 and not loop.tick("drain_feedback").run_requests
    assert [e.passed for run in loop.runs for e in run.get_asset_check_evaluations()] == [True, True]


# --- (b) a shift in taste -> drift -> retrain -> a new version served ------------------------------
def rare_genre_tracks(loop: Loop, users, n: int = 15) -> dict[str, tuple[str, list[str]]]:
    """For each user, the genre they played least (of those with ``n`` tracks) and ``n`` of its tracks."""
    genre = (
        loop.store.read_tracks()
        .set_index("track_id")["genres"]
        .map(lambda g: g[0] if g is not None and len(g) else None)
        .dropna()
    )
    events = loop.store.read_events()
    played = events.assign(genre=events["track_id"].map(genre)).groupby("user_id")["genre"].value_counts()
    big = [g for g, count in genre.value_counts().items() if count >= n]
    chosen = {}
    for user in users:
        rarest = min(big, key=lambda g: played[user].get(g, 0))
        chosen[user] = (rarest, list(genre[genre == rarest].index[:n]))
    return chosen


def test_a_shift_in_taste_is_drift_and_retrains_a_version_the_api_serves(settings):
    """Listeners like and complete 15 tracks each of a genre they rarely played, through POST /feedback;
    the worker learns from them and acknowledges; the drain sensor's runs store them; the drift monitor
    runs on its own after the drain and its check fails; the retrain sensor asks for a run saying
    `drift` (the volume trigger is out of reach); the new version passes the gate and the API serves it."""
    loop = Loop.first_run(settings)
    worker = FeedbackWorker(loop.redis, loop.keys, consumer="story-worker", batch=500, block_ms=10)
    listeners = list(loop.store.read_events()["user_id"].value_counts().index[:40])
    shift = rare_genre_tracks(loop, listeners)
    with api(settings) as client:
        assert {
            client.get(f"/recommendations/{u}", params={"count": 10}).json()["model_version"] for u in listeners
        } == {"1"}
        for user, (_, tracks) in shift.items():
            events = [
                {"user_id": user, "track_id": t, "type": kind} for t in tracks for kind in ("like", "track_completed")
            ]
            assert client.post("/feedback", json={"events": events}).status_code == 202
        client.portal.call(client.app.state.echotune.flush_exposures)  # the lists it served, as its 0.2 s flush does
        drain(worker)  # learns online and acknowledges

        for request in loop.tick("drain_feedback").run_requests:
            loop.launch(request, "drain_feedback")
        assert loop.redis.xlen(loop.keys.feedback_stream()) == 0  # stored and acknowledged: trimmed
        monitored = dict(loop.automate())
        assert list(monitored) == [dg.AssetKey("feedback_drift")]  # on its own, after the drain
        checks = {
            e.asset_check_key.name: e for e in monitored[dg.AssetKey("feedback_drift")].get_asset_check_evaluations()
        }
        assert (
            checks["drift_within_threshold"].passed is False
            and checks["drift_within_threshold"].metadata["drift_share"].value >= 0.5
        )

        (request,) = loop.tick("retrain_when_needed").run_requests
        assert request.tags[TRIGGER_TAG] == "drift" and "drift share" in request.tags[REASON_TAG]
        retrain = loop.launch(request, "retrain")
        model = next(
            e.materialization.metadata
            for e in retrain.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "recommender_model"
        )
        assert model["version"].value == "2" and model["promoted"].value is True, model["promotion_reason"].value
        assert (
            loop.instance.get_run_by_id(retrain.run_id).tags[TRIGGER_TAG] == "drift"
            and model["trigger"].value == request.tags[REASON_TAG]
        )

        assert served_version(client, listeners[0], "2") == "2"


def served_version(client: TestClient, user: str, expected: str, within: float = 10.0) -> str:
    """The model version behind the user's list, asked again until it is ``expected``; fails after
    ``within`` seconds (the running API checks the champion alias every 2 s)."""

    def version() -> str | None:
        served = client.get(f"/recommendations/{user}", params={"count": 10}).json()["model_version"]
        return served if served == expected else None

    return wait_until(version, within, f"the API serving version {expected} to {user}")


# --- (c) a champion moved by hand -------------------------------------------------------------------
def test_a_champion_moved_by_hand_in_mlflow_is_published_and_served(settings):
    """A data scientist moves `champion` to another version in MLflow (its UI calls this API): the
    follow_the_champion sensor asks for a publish run saying so, and the running API serves that version."""
    loop = Loop.first_run(settings)
    assert (
        loop.defs.resolve_job_def(everything_job.name).execute_in_process(instance=loop.instance).success
    )  # a second version
    registry = loop.registry
    moved_to = "2" if registry.alias(CHAMPION) == "1" else "1"
    user = loop.store.read_events()["user_id"].iloc[0]
    with api(settings) as client:
        before = served_version(client, user, registry.alias(CHAMPION))
        MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(
            settings.registered_model, CHAMPION, moved_to
        )
        assert (
            before != moved_to and client.get(f"/recommendations/{user}").json()["model_version"] == before
        )  # MLflow moved, Redis not yet

        (request,) = loop.tick("follow_the_champion").run_requests
        assert (
            request.tags[TRIGGER_TAG] == "champion_moved"
            and f"champion moved to version {moved_to} in MLflow" in request.tags[REASON_TAG]
        )
        loop.launch(request, "publish_champion")
        assert served_version(client, user, moved_to) == moved_to
    assert not loop.tick("follow_the_champion").run_requests  # published: nothing more to do


# --- (d) new catalog tracks, served before a retrain -------------------------------------------------
def test_new_catalog_tracks_are_served_before_a_retrain(settings, tmp_path, monkeypatch):
    """Tracks of a new genre imported with `echotune ingest tracks`: the new_catalog_tracks sensor asks
    for an extend_catalog run, and the API serves them (version 1, vectors from their audio features
    and genres) while no new model was trained."""
    loop = Loop.first_run(settings)
    path = tmp_path / "new.csv"
    new_ids = write_new_genre_tracks(path)
    monkeypatch.setenv("ECHOTUNE_HOME", str(settings.home))
    get_settings.cache_clear()
    try:
        imported = CliRunner().invoke(main, ["ingest", "tracks", str(path)])
    finally:
        get_settings.cache_clear()
    assert imported.exit_code == 0, imported.output

    with api(settings) as client:
        assert not client.get("/recommendations/someone-new", params={"genres": "brand new genre", "count": 5}).json()[
            "tracks"
        ]
        (request,) = loop.tick("new_catalog_tracks").run_requests
        assert (
            request.tags[TRIGGER_TAG] == "new_tracks"
            and "3 catalog tracks that version 1 does not serve" in request.tags[REASON_TAG]
        )
        loop.launch(request, "extend_catalog")
        # the API reloads an extended catalog at its next alias check
        body = wait_until(
            lambda: (
                (
                    b := client.get(
                        "/recommendations/someone-new", params={"genres": "brand new genre", "count": 5}
                    ).json()
                )["tracks"]
                and b
            ),
            10,
            "the new tracks served",
        )
    assert sorted(t["track_id"] for t in body["tracks"]) == sorted(new_ids) and body["model_version"] == "1"
    assert loop.registry.versions() == ["1"]  # no retrain
