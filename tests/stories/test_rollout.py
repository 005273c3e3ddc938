"""Story: a guarded rollout through the real platform (Redis, MLflow, parquet, the API, Dagster's sensors
evaluated by Dagster's own helpers). An operator registers a model trained outside the pipeline and
rolls it out with the CLI; listeners answer the candidate's lists far worse than the champion's; after
the next drain the rollout sensor asks for a look, and the look rolls it back: the reason in the run's
tags, on the MLflow version, in /metrics and in the report, and the API stops serving it. A second
version, answered as well as the champion, is promoted through the ramp to champion."""

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from core.clock import ManualClock
from core.model_registry import CANDIDATE, CHAMPION
from core.settings import get_settings
from core.vectorstore import VectorStore
from echotune.cli import main
from experiments.rollout import PROMOTED, ROLLED_BACK, Rollouts
from experiments.rollout_rules import RolloutPolicy
from experiments.store import ExperimentStore
from models import load as load_model
from pipelines.rollout.assets import DECISION_REASON_TAG, DECISION_TAG
from pipelines.rollout.sensors import rollout_job
from serving.main import create_app
from tests.stories.loop_support import CLIENT_KEY, Loop

pytestmark = pytest.mark.slow
LISTENERS = 120


@pytest.fixture
def operator_env(settings, monkeypatch):
    """The operator's shell: the CLI reads the same settings as the platform."""
    for name, value in {
        "ECHOTUNE_HOME": settings.home,
        "ECHOTUNE_REDIS_URL": settings.redis_url,
        "ECHOTUNE_REDIS_PREFIX": settings.redis_prefix,
        "ECHOTUNE_CANARY_SHARE": settings.canary_share,
        "ECHOTUNE_ROLLOUT_STEPS": settings.rollout_steps,
        "ECHOTUNE_ROLLOUT_MIN_USERS": settings.rollout_min_users,
    }.items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(settings, mlflow_migrated):
    mlflow_migrated(settings.mlflow_tracking_uri)
    return settings.model_copy(
        update={
            "api_keys": f"{CLIENT_KEY}:client",
            "rate_limit_per_minute": 10**6,
            "rate_limit_feedback_events_per_minute": 10**7,
            "retrain_after_events": 10**9,
            "canary_share": 0.5,  # half the listeners: enough users per arm from a small simulated crowd
            "rollout_steps": "0.5,1.0",
            "rollout_min_users": 20,
            "rollout_ctr_margin": 0.2,
            "rollout_max_p95_ms": 10_000.0,  # a loaded test machine's latency is not this story's subject
        }
    )


def printed(output: str) -> dict:
    """The JSON line a command printed (MLflow logs its own lines around it)."""
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


def register_copy_of_champion(loop: Loop, tmp_path, name: str) -> str:
    """What an operator does: a model saved in a folder (here the champion's own model, so it serves the
    same catalog), registered with `echotune model register`."""
    folder = loop.registry.download(loop.registry.alias(CHAMPION), tmp_path / name)
    model = load_model(folder)
    saved = model.save(tmp_path / f"{name}-saved")
    result = CliRunner().invoke(main, ["model", "register", str(saved)])
    assert result.exit_code == 0, result.output
    return printed(result.output)["version"]


def listen(client: TestClient, ctr: dict[str, float], rng: np.random.Generator, rounds: int = 4) -> set[str]:
    """Every listener asks for lists and clicks tracks of them at their arm's rate (``ctr``: variant ->
    chance per track shown); returns the versions that answered."""
    versions = set()
    for _ in range(rounds):
        events = []
        for i in range(LISTENERS):
            body = client.get(f"/recommendations/story-listener-{i}", params={"count": 10}).json()
            versions.add(body["model_version"])
            rate = ctr.get(body["variant"] or "", 0.2)
            events += [
                {
                    "user_id": body["user_id"],
                    "track_id": t["track_id"],
                    "type": "recommendation_clicked",
                    "token": body["token"],
                }
                for t in body["tracks"]
                if rng.random() < rate
            ]
        for start in range(0, len(events), 1000):
            assert client.post("/feedback", json=events[start : start + 1000]).status_code == 202
    client.portal.call(client.app.state.echotune.flush_exposures)  # the 0.2 s flush, now
    return versions


def drain_and_look(loop: Loop) -> dict[str, str]:
    """The daemon's part: drain the stream, then the rollout sensor's tick and the look it asks for; the
    look's run tags."""
    for request in loop.tick("drain_feedback").run_requests:
        loop.launch(request, "drain_feedback")
    tick = loop.tick("watch_rollout")
    assert len(tick.run_requests) == 1, tick.skip_message
    return dict(loop.launch(tick.run_requests[0], rollout_job.name).dagster_run.tags)


def test_a_bad_rollout_is_rolled_back_and_a_good_one_promoted(settings, operator_env, tmp_path):
    loop = Loop.first_run(settings)  # version 1, champion
    experiments = ExperimentStore(loop.redis, loop.keys)
    for running in experiments.running():  # the demo's A/B test takes every listener, and would keep them
        experiments.set_status(running.id, "stopped")
    rng = np.random.default_rng(0)
    clock = ManualClock(at=time.time())  # events dated now: the look reads the days around the rollout's start
    started = time.monotonic()

    bad = register_copy_of_champion(loop, tmp_path, "bad")
    out = CliRunner().invoke(main, ["model", "rollout", bad])
    assert out.exit_code == 0, out.output
    assert printed(out.output)["share"] == "0.5"
    with TestClient(create_app(settings, clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        served = listen(client, {"champion": 0.3, "candidate": 0.02}, rng)
        assert served == {"1", bad}  # both arms answered, by their versions
        tags = drain_and_look(loop)
        assert tags[DECISION_TAG] == "rollback" and "ctr breached" in tags[DECISION_REASON_TAG]
        registry = loop.registry
        assert registry.alias(CANDIDATE) is None and registry.alias(CHAMPION) == "1"
        assert registry.version_tags(bad)["rollout"] == "rollback"
        assert "ctr breached" in registry.version_tags(bad)["rollout_reason"]
        state = Rollouts(loop.redis, loop.keys, registry, release_store(loop), RolloutPolicy()).current()
        assert state.status == ROLLED_BACK and state.share == 0.0
        report = json.loads((settings.layout.reports / state.experiment_id / "summary.json").read_text())
        assert report["verdict"] == "don't ship" and report["decisions"][0]["decision"] == "rollback"
        # the API follows within its experiment refresh: no listener is served the rolled-back version
        clock.advance(10)
        assert bad not in listen(client, {}, rng, rounds=1)
        metrics = client.get("/metrics").text
        assert 'echotune_rollout_decisions_total{decision="rollback"} 1.0' in metrics
        assert f'echotune_model_request_duration_seconds_count{{model_version="{bad}"}}' in metrics

        good = register_copy_of_champion(loop, tmp_path, "good")
        assert CliRunner().invoke(main, ["model", "rollout", good]).exit_code == 0
        clock.advance(10)
        served = listen(client, {"champion": 0.3, "candidate": 0.3}, rng, rounds=6)
        assert good in served
        tags = drain_and_look(loop)
        assert tags[DECISION_TAG] == "promote", tags[DECISION_REASON_TAG]
        assert loop.registry.alias(CHAMPION) == good and loop.registry.alias(CANDIDATE) is None
        assert release_store(loop).alias(CHAMPION) == good
        state = Rollouts(loop.redis, loop.keys, loop.registry, release_store(loop), RolloutPolicy()).current()
        assert state.status == PROMOTED
    assert time.monotonic() - started < 120


def release_store(loop: Loop) -> VectorStore:
    return VectorStore(loop.redis, loop.keys)
