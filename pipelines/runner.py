"""Materialize the whole asset graph in-process against the Dagster instance in DAGSTER_HOME, so the
run shows up in the UI like any other."""

from __future__ import annotations

import dagster as dg

from echotune.settings import Settings
from pipelines.definitions import all_assets_job, build_defs


def materialize_everything(settings: Settings, instance: dg.DagsterInstance | None = None) -> bool:
    """Run every asset (and its checks) once. Returns True when the run succeeded."""
    defs = build_defs(settings)
    job = defs.resolve_job_def(all_assets_job.name)
    result = job.execute_in_process(
        instance=instance or dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    return result.success
