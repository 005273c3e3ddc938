"""The Dagster instance, derived from the settings: ``DAGSTER_HOME/dagster.yaml`` is written by the
project (``echotune pipeline``, ``echotune demo``) from ``ECHOTUNE_DATABASE_URL``, so one setting moves
Dagster and MLflow together and no second copy of the connection has to be kept in step.

Unset, runs, event logs and schedules live in SQLite files under DAGSTER_HOME; set, in the ``dagster``
schema of that PostgreSQL database, which Dagster migrates on first use. Either way runs are queued:
a few at a time, at most one training run (a run carrying :data:`TRAINING_TAG`) and one drain of the
feedback stream (:data:`DRAIN_TAG`).
"""

from __future__ import annotations

from typing import Any

import yaml

from core.database import DAGSTER_SCHEMA, DRIVER, Database, ensure_schema, search_path
from core.settings import Settings

TRAINING_TAG = "echotune/training"  # carried by every job that trains a model (see pipelines.automation.jobs)
DRAIN_TAG = "echotune/drain"  # carried by the drain job: the queue starts drains one at a time, in the order asked (oldest day first)
# SQLite serialises writers, so more concurrent runs would mostly wait on its lock; PostgreSQL does not
# (the default launcher still runs them all on this host: a cluster's launcher spreads them)
MAX_CONCURRENT_RUNS = {"sqlite": 2, "postgres": 8}
HEADER = """\
# Written by `echotune pipeline` / `echotune demo` from the ECHOTUNE_* settings on every start: edit the
# settings (ECHOTUNE_DATABASE_URL selects PostgreSQL), not this file. See docs/scaling.md.
"""


def instance_config(settings: Settings) -> dict[str, Any]:
    """The contents of dagster.yaml. The password is never written: Dagster's processes get it from
    ``PGPASSWORD`` (see :func:`prepare_instance`), which libpq reads, like ``~/.pgpass``."""
    database = settings.database
    config: dict[str, Any] = {"telemetry": {"enabled": False}}
    if database is not None:
        config["storage"] = {"postgres": {"postgres_db": _postgres_db(database)}}
    config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {
            "max_concurrent_runs": MAX_CONCURRENT_RUNS["postgres" if database else "sqlite"],
            # two trainings at once would race for the champion alias and the CPU; the sensors and the
            # schedule may ask for one while another runs, and it waits in the queue
            # drains of days the sensor asked for in one tick start one at a time and oldest first (the
            # queue is first in, first out); the drain's Redis lock (core.ingest.live_feedback) also
            # covers drains that bypass the queue (`echotune pipeline`), this spares them a run slot spent waiting
            "tag_concurrency_limits": [{"key": TRAINING_TAG, "limit": 1}, {"key": DRAIN_TAG, "limit": 1}],
        },
    }
    return config


def _postgres_db(database: Database) -> dict[str, Any]:
    return {
        "username": database.username,
        "hostname": database.host,
        "port": database.port,
        "db_name": database.name,
        "scheme": DRIVER,
        "params": {**database.params, **search_path(DAGSTER_SCHEMA)},
    }


def prepare_instance(settings: Settings) -> dict[str, str]:
    """Write ``settings.dagster_home/dagster.yaml`` and, on PostgreSQL, create the ``dagster``
    schema if missing. Returns the environment every Dagster process of this project needs:
    ``DAGSTER_HOME``, and ``PGPASSWORD`` when the database URL carries a password."""
    env = {"DAGSTER_HOME": str(settings.dagster_home)}
    database = settings.database
    if database is not None:
        ensure_schema(database.url(DAGSTER_SCHEMA))  # first: a database it cannot use leaves no config behind
        if database.password:
            env["PGPASSWORD"] = database.password
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    path = settings.dagster_home / "dagster.yaml"
    text = HEADER + yaml.safe_dump(instance_config(settings), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return env
