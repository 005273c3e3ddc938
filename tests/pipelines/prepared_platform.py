"""A platform materialized once and copied for each test that changes it: the sensor tests evaluate
their ticks on a store a real pipeline run left, without running the whole graph again per test.

What a run leaves is copied as it is: the home folder (parquet tables, reports, the MLflow database and
artifacts, experiment definitions), the Dagster instance (runs and materializations, on disk) and the
Redis keys (dumped and restored under the copy's own prefix). The only rewrite is MLflow's: its database
holds absolute artifact locations, which must name the copy's folder, not the original's."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import redis

from core.settings import Settings
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs

INSTANCE = "dagster-instance"  # the Dagster instance's folder, beside the home
_UNDER_HOME = (
    "data_dir",
    "var_dir",
    "dagster_home",
    "mlflow_artifact_root",
    "experiments_dir",
)  # resolved against the home


@dataclass(frozen=True)
class PreparedPlatform:
    settings: Settings
    root: Path  # holds ``home`` and the instance folder

    @classmethod
    def materialize(cls, settings: Settings, root: Path) -> PreparedPlatform:
        """Everything materialized once on ``settings`` (whose home is ``root / "home"``), with the runs
        recorded in an instance on disk under ``root``."""
        assert settings.home == (root / "home").resolve(), "the home must sit in root: it is copied with the instance"
        (root / INSTANCE).mkdir()
        with dg.DagsterInstance.local_temp(tempdir=str(root / INSTANCE)) as instance:
            assert (
                build_defs(settings).resolve_job_def(everything_job.name).execute_in_process(instance=instance).success
            )
        return cls(settings, root)

    def copy(self, root: Path, prefix: str, **updates) -> tuple[Settings, dg.DagsterInstance]:
        """The platform as a test of its own sees it: a copy under ``root`` with Redis key prefix
        ``prefix`` (``updates``: other settings). The caller disposes of the instance."""
        assert not self.settings.redis_cluster, "keys are copied on one Redis server"
        shutil.copytree(self.root / INSTANCE, root / INSTANCE)
        shutil.copytree(self.settings.home, root / "home", symlinks=True)
        fields = self.settings.model_dump(exclude={"home", "redis_prefix", "mlflow_tracking_uri", *_UNDER_HOME})
        settings = Settings(**{**fields, **updates}, home=root / "home", redis_prefix=prefix)
        _rehome_sqlite(
            Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")), str(self.settings.home), str(settings.home)
        )
        _copy_keys(redis.Redis.from_url(settings.redis_url), self.settings.redis_prefix, prefix)
        return settings, dg.DagsterInstance.local_temp(tempdir=str(root / INSTANCE))


def _rehome_sqlite(database: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in every text value of every table (MLflow's artifact locations,
    run artifact URIs and model version sources are absolute paths or file:// URIs)."""
    with sqlite3.connect(database) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        columns = [(table, row[1]) for table in tables for row in db.execute(f'PRAGMA table_info("{table}")')]
        for table, column in columns:
            db.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                (old, new, old),
            )
        rewritten = sum(
            db.execute(f'SELECT count(*) FROM "{table}" WHERE instr("{column}", ?) > 0', (new,)).fetchone()[0]
            for table, column in columns
        )
        left = sum(
            db.execute(f'SELECT count(*) FROM "{table}" WHERE instr("{column}", ?) > 0', (old,)).fetchone()[0]
            for table, column in columns
        )
    assert rewritten and not left, f"MLflow's database still names {old} ({left} values), or named it nowhere"


def _copy_keys(client: redis.Redis, old: str, new: str) -> None:
    """Every key under prefix ``old`` restored under prefix ``new`` (values byte for byte: DUMP/RESTORE)."""
    for key in client.scan_iter(match=f"{old}:*", count=1000):
        client.restore(new.encode() + key[len(old) :], 0, client.dump(key), replace=True)
