"""The production configuration: Dagster and MLflow on PostgreSQL. Runs when a PostgreSQL server is
reachable at 127.0.0.1:5432 (CI has one), in a throwaway database; skips with the reason otherwise."""

import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest

psycopg2 = pytest.importorskip("psycopg2")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def database():
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL reachable at 127.0.0.1:5432 ({str(exc).strip()}): production configuration not tested")
    admin.autocommit = True
    name = f"echotune_test_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_dagster_instance_on_postgres(database, settings, monkeypatch, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("ECHOTUNE_DAGSTER_PG_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}")
    from pipelines.definitions import build_defs, resources_from

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        defs = build_defs(settings)
        result = dg.materialize(defs.assets, selection=["synthetic_catalog", "tracks"], resources=resources_from(settings), instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("tracks")) is not None
        assert len(instance.get_runs()) == 1


def test_mlflow_registry_on_postgres(database, tmp_path, blocks_like):
    from core.model_registry import CHAMPION, ModelRegistry
    from models import create

    registry = ModelRegistry.open(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}", tmp_path / "artifacts", "prod-test", "prod-model")
    model = create("popularity").fit(blocks_like)
    record = registry.log_version(model.save(tmp_path / "m"), "popularity", {}, {"test_ndcg_at_10": 0.1}, {})
    registry.set_alias(CHAMPION, record.version)
    assert registry.alias(CHAMPION) == record.version == "1"


@pytest.fixture
def blocks_like():
    import pandas as pd

    from models.interactions import Interactions

    return Interactions.from_frame(pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "weight": [1.0, 2.0, 1.0]}))
