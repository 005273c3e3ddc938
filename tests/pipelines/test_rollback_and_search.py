"""Rollback from Dagster and the CLI, and the hyperparameter search job with its MLflow trials. The two
versions behind them are made once for the module (one pipeline run, then a release); each test starts
from version 2 as champion."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import redis
from click.testing import CliRunner

from core import release
from core.contracts import RedisKeys
from core.model_registry import CHAMPION, ModelRegistry
from core.settings import get_settings
from core.tables import OfflineStore
from core.vectorstore import VectorStore
from echotune.cli import main
from models.training import train
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs, resources_from

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(module_settings, mlflow_migrated):
    """One project for the module's tests (they only move the champion alias, which each test resets)."""
    mlflow_migrated(module_settings.mlflow_tracking_uri)
    return module_settings


@pytest.fixture(scope="module")
def released_twice(settings, redis_url):
    """Version 1 from a pipeline run (tables, MLflow, Redis, the Dagster instance the jobs run on), then
    version 2 trained on the same tables and released through core.release as the training and serving
    assets do (registered, tagged promoted, published): a second whole-graph run adds nothing here."""
    instance = dg.DagsterInstance.ephemeral()
    defs = build_defs(settings)
    assert defs.resolve_job_def(everything_job.name).execute_in_process(instance=instance).success
    registry = ModelRegistry.from_settings(settings)
    tables, training = OfflineStore(settings.layout.tables), resources_from(settings)["training"]
    result = train(
        tables.read_interactions(), tables.read_tracks(), training.algorithm, training.params(), k=training.k
    )
    with tempfile.TemporaryDirectory() as tmp:
        record = release.register(registry, result, result.model.save(Path(tmp) / "model"), {"trained_until_ms": "0"})
    assert record.version == "2"
    registry.client.set_model_version_tag(settings.registered_model, "2", "promotion", "promoted")
    registry.set_alias(CHAMPION, "2")
    release.publish_aliases(
        registry, VectorStore(redis.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix)), tables.read_tracks()
    )
    return defs, instance, registry


@pytest.fixture
def two_versions(settings, redis_url, released_twice):
    """Versions 1 and 2 registered and published, version 2 champion in MLflow and Redis (as a better
    model would be), whatever an earlier test of the module moved."""
    defs, instance, registry = released_twice
    registry.set_alias(CHAMPION, "2")
    VectorStore(redis.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix)).set_alias(CHAMPION, "2")
    return defs, instance, registry


def test_rollback_from_dagster_moves_mlflow_and_redis(settings, redis_url, two_versions):
    defs, instance, registry = two_versions
    store = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix))
    store.set_alias("champion", "2")
    result = defs.resolve_job_def("rollback_champion").execute_in_process(
        instance=instance, run_config={"ops": {"move_champion_back": {"config": {"to_version": "1"}}}}
    )
    assert result.success
    assert registry.alias(CHAMPION) == "1" and store.alias("champion") == "1"


def test_rollback_from_the_cli(settings, redis_url, two_versions, monkeypatch):
    for name, value in {"HOME": settings.home, "REDIS_URL": redis_url, "REDIS_PREFIX": settings.redis_prefix}.items():
        monkeypatch.setenv(f"ECHOTUNE_{name}", str(value))
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(main, ["model", "rollback", "--to", "1"])
        status = CliRunner().invoke(main, ["model", "status"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1]) == {"previous_champion": "2", "champion": "1"}
    lines = [json.loads(line) for line in status.output.strip().splitlines()]
    assert [line["version"] for line in lines] == ["1", "2"] and "champion" in lines[0]["aliases"]
    store = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix))
    assert store.alias("champion") == "1"


def test_hyperparameter_search_logs_every_trial(settings, two_versions):
    defs, instance, registry = two_versions
    config = {
        "ops": {
            "hyperparameter_search": {
                "config": {
                    "n_trials": 3,
                    "space_json": json.dumps({"dimensions": [8, 16], "regularization": {"log_uniform": [1, 5]}}),
                }
            }
        }
    }
    result = defs.resolve_job_def("search_hyperparameters").execute_in_process(instance=instance, run_config=config)
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    parent = meta["mlflow_parent_run"].value
    trials = registry.client.search_runs(
        [registry.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(trials) == 3 and all("validation_ndcg_at_10" in t.data.metrics for t in trials)
    assert set(meta["best_params"].value) == {"dimensions", "regularization"}
