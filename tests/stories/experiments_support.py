"""What the experiment stories share: a project as a user has it after `echotune pipeline` (the
synthetic data set, a champion model in MLflow, its vectors in Redis), the API on it, listeners who
click what suits their taste, and the steps the Dagster daemon takes (drain the feedback partitions,
tick the reports sensor, run the report it asks for), each through Dagster's own helpers."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.contracts import RedisKeys
from core.ingest.live_feedback import undrained_days
from core.redis_clients import redis_client
from core.settings import Settings
from core.synthetic import SyntheticWorld, click_given_affinity
from pipelines.definitions import build_defs, resources_from
from pipelines.runner import materialize_everything
from serving.main import create_app

CLIENT_KEY, ADMIN_KEY = "story-client-key-0123456789", "story-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
DEMO = "demo-champion-vs-popularity"


@dataclasses.dataclass
class Project:
    settings: Settings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    world: SyntheticWorld  # the synthetic listeners behind the data set: their tastes decide their clicks


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, redis_url: str, mlflow_migrated) -> Iterator[Project]:
    """`echotune pipeline` run once on the synthetic data set in a folder of its own, on a real Redis
    (MLflow's tables created already: a first run on a fresh folder is tests/pipelines/test_pipeline.py's subject)."""
    settings = Settings(
        home=tmp_path_factory.mktemp("story"),
        redis_url=redis_url,
        redis_prefix=f"story-{uuid.uuid4().hex[:10]}",
        api_keys=f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin",
        synth_tracks=300,
        synth_users=120,
        synth_events=9_000,
        synth_days=5,
        train_params={"dimensions": 16},
    )
    mlflow_migrated(settings.mlflow_tracking_uri)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_everything(settings, instance), "echotune pipeline failed"
    world = SyntheticWorld.generate(settings.synth_tracks, settings.synth_users, settings.synth_seed)
    yield Project(settings, instance, build_defs(settings), world)
    client = redis_client(redis_url)
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def api(project: Project) -> Iterator[TestClient]:
    """The API of the project (serving.main.create_app), as `echotune serve` starts it."""
    with TestClient(create_app(project.settings), headers={"X-API-Key": CLIENT_KEY}) as client:
        yield client


def flush_exposures(api: TestClient) -> None:
    """Send the lists the API served to the stream now (its background task does it every 0.2 s)."""
    api.portal.call(api.app.state.echotune.flush_exposures)


def stop_running(api: TestClient) -> list[str]:
    """The admin stops every running experiment (the demo's own takes every listener of its layer)."""
    running = [e["id"] for e in api.get("/experiments").json() if e["status"] == "running"]
    for experiment_id in running:
        assert api.post(f"/experiments/{experiment_id}/stop", headers=ADMIN).status_code == 200
    return running


def listen(
    api: TestClient, world: SyntheticWorld, lists: int = 2, count: int = 10, clicks: int | None = 2, seed: int = 0
) -> dict[str, int]:
    """Every synthetic listener asks for ``lists`` lists and clicks the ``clicks`` tracks of each that
    suit their taste best (highest affinity), or with ``clicks=None`` each track with the probability
    the synthetic world's response model gives its affinity (:func:`core.synthetic.click_given_affinity`),
    posting each click with the list's request token. Returns the lists served and clicks accepted."""
    index = {t: i for i, t in enumerate(world.tracks["track_id"])}
    rng = np.random.default_rng(seed)
    served = accepted = 0
    for u, user in enumerate(world.user_ids):
        taste = world.affinity(np.array([u]))[0]
        for _ in range(lists):
            response = api.get(f"/recommendations/{user}", params={"count": count})
            assert response.status_code == 200, response.text
            body = response.json()
            served += 1
            tracks = [t["track_id"] for t in body["tracks"]]
            if clicks is None:
                liked = [t for t in tracks if rng.random() < click_given_affinity(taste[index[t]])]
            else:
                liked = sorted(tracks, key=lambda t: -taste[index[t]])[:clicks]
            for track in liked:
                reply = api.post(
                    "/feedback",
                    json={
                        "user_id": str(user),
                        "track_id": track,
                        "type": "recommendation_clicked",
                        "token": body["token"],
                    },
                )
                assert reply.status_code == 202, reply.text
                accepted += reply.json()["accepted"]
    return {"lists": served, "clicks": accepted}


def drain(project: Project) -> list[str]:
    """Materialize the ``feedback_events`` partition of every day the stream holds, oldest first, as the
    drain sensor asks; returns the partition keys."""
    client = redis_client(project.settings.redis_url)
    try:
        days = [d.isoformat() for d in undrained_days(client, RedisKeys(project.settings.redis_prefix))]
    finally:
        client.close()
    asset = project.defs.resolve_assets_def("feedback_events")
    for day in days:
        assert dg.materialize([asset], partition_key=day, instance=project.instance, selection=[asset.key]).success
    return days


def report(project: Project, experiment_id: str) -> dict:
    """One tick of the ``running_experiment_reports`` sensor, the run it asks for this experiment
    executed as the daemon would launch it, and the summary.json the report asset wrote."""
    sensor = next(s for s in project.defs.sensors if s.name == "running_experiment_reports")
    with dg.build_sensor_context(
        instance=project.instance, resources=resources_from(project.settings), definitions=project.defs
    ) as context:
        tick = sensor(
            context
        )  # invoked as Dagster's testing guide does: the daemon adds the partitions it asks for, then launches the runs
    for request in tick.dynamic_partitions_requests:
        project.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    [run] = [r for r in tick.run_requests if r.partition_key == experiment_id]
    job = project.defs.resolve_job_def(run.job_name or "experiment_reports")
    assert job.execute_in_process(instance=project.instance, partition_key=run.partition_key, tags=run.tags).success
    return json.loads((project.settings.layout.reports / experiment_id / "summary.json").read_text())
