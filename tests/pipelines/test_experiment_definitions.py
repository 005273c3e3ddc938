"""The demo's experiment belongs to the demo (issue 21, item 8): `experiments/definitions/` shipped it
with `status: running` and 100% traffic, so every `echotune pipeline` registered it whatever the data
source, and a team on its own listening data served a popularity list to half of its listeners."""

from pathlib import Path

import dagster as dg
import yaml

from core.contracts import RedisKeys
from experiments.definition import Experiment
from experiments.simulation import DEMO_EXPERIMENT
from experiments.store import ExperimentStore
from pipelines.definitions import build_defs

REPO = Path(__file__).resolve().parents[2]
OWN = {
    "id": "home-ranking",
    "name": "Our ranking test",
    "status": "running",
    "min_sample_size": 10,
    "variants": [
        {"name": "control", "algorithm": "popularity", "weight": 0.5},
        {"name": "treatment", "model_alias": "champion", "weight": 0.5},
    ],
}


def materialize_definitions(settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The ``experiment_definitions`` asset as the pipeline of ``settings`` wires it, materialized alone."""
    job = build_defs(settings).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("experiment_definitions")])


def registered(settings, redis_client) -> dict[str, str]:
    return {e.id: e.status for e in ExperimentStore(redis_client, RedisKeys(settings.redis_prefix)).all()}


def test_the_shipped_definitions_folder_runs_nothing_on_a_users_listeners():
    shipped = sorted((REPO / "experiments" / "definitions").glob("*.y*ml"))
    assert all(Experiment.from_yaml(path).status != "running" for path in shipped), shipped
    assert Experiment.from_yaml(DEMO_EXPERIMENT).id == DEMO_EXPERIMENT.stem == "demo-champion-vs-popularity"


def test_on_a_users_own_data_the_demo_experiment_is_not_registered_and_their_own_run_as_written(
    settings, redis_client, tmp_path
):
    folder = tmp_path / "my-experiments"
    folder.mkdir()
    (folder / "home-ranking.yaml").write_text(yaml.safe_dump(OWN))
    own_data = settings.model_copy(update={"sources": "interaction_logs", "experiments_dir": folder})
    defs = build_defs(own_data)
    assert not defs.resolve_asset_graph().has(dg.AssetKey("demo_experiment_events"))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_definitions(own_data, instance)
    assert result.success
    assert registered(own_data, redis_client) == {"home-ranking": "running"}
    assert set(instance.get_dynamic_partitions("experiments")) == {"home-ranking"}

    # an install where an earlier demo run (the synthetic source) left the demo's experiment running
    ExperimentStore(redis_client, RedisKeys(own_data.redis_prefix)).put(
        Experiment.from_yaml(DEMO_EXPERIMENT).model_copy(update={"layer": "demo"})
    )
    result = materialize_definitions(own_data, instance)
    assert registered(own_data, redis_client) == {"home-ranking": "running", "demo-champion-vs-popularity": "stopped"}
    assert (
        result.asset_materializations_for_node("experiment_definitions")[0].metadata["demo_experiment_stopped"].value
        == "demo-champion-vs-popularity"
    )


def test_with_the_synthetic_source_the_demo_registers_its_own_experiment_and_leaves_the_folders(
    settings, redis_client, tmp_path
):
    folder = tmp_path / "my-experiments"
    folder.mkdir()
    (folder / "home-ranking.yaml").write_text(yaml.safe_dump({**OWN, "status": "draft"}))
    demo = settings.model_copy(update={"experiments_dir": folder})
    assert build_defs(demo).resolve_asset_graph().has(dg.AssetKey("demo_experiment_events"))
    ExperimentStore(redis_client, RedisKeys(demo.redis_prefix)).put(
        Experiment.from_yaml(DEMO_EXPERIMENT)
    )  # as demo_experiment_events does
    assert materialize_definitions(demo, dg.DagsterInstance.ephemeral()).success
    assert registered(demo, redis_client) == {
        "home-ranking": "draft",
        "demo-champion-vs-popularity": "running",
    }  # not stopped: it is the demo
