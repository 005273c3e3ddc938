"""Materialize the whole asset graph in-process against the Dagster instance in DAGSTER_HOME, so the
runs show up in the UI like any other: first the live feedback days not yet drained (oldest first, as
the drain sensor asks), then everything else, then the drift monitor on what was drained, then a
report for every running experiment."""

import dagster as dg

from core.contracts.redis_keys import RedisKeys
from core.ingest.live_feedback import undrained_days
from core.redis_clients import connect
from core.settings import Settings
from experiments.store import ExperimentStore
from pipelines.automation.jobs import drain_job, drift_job, everything_job
from pipelines.definitions import build_defs
from pipelines.experiment_reports.definitions import reports_job

_QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def materialize_everything(settings: Settings, instance: dg.DagsterInstance | None = None) -> bool:
    """Drain live feedback, run every other asset (and its checks) once, measure drift against the
    champion, report running experiments. True when all succeeded. The hyperparameter search (long,
    launched when wanted) and the catalog extension (the new model serves the whole catalog) are not run."""
    instance = instance or dg.DagsterInstance.get()
    defs = build_defs(settings)
    client = connect(settings, "pipeline")
    try:
        days = undrained_days(client, RedisKeys(settings.redis_prefix))
    finally:
        client.close()
    drain = defs.resolve_job_def(drain_job.name)
    ok = True
    for day in days:
        ok &= drain.execute_in_process(
            instance=instance, partition_key=day.isoformat(), raise_on_error=False, run_config=_QUIET
        ).success
    for job in (everything_job, drift_job):
        ok &= (
            defs.resolve_job_def(job.name)
            .execute_in_process(instance=instance, raise_on_error=False, run_config=_QUIET)
            .success
        )
    client = connect(settings, "pipeline")
    try:
        running = [e.id for e in ExperimentStore(client, RedisKeys(settings.redis_prefix)).running()]
    finally:
        client.close()
    reports = defs.resolve_job_def(reports_job.name)
    for experiment_id in running:
        ok &= reports.execute_in_process(
            instance=instance, partition_key=experiment_id, raise_on_error=False, run_config=_QUIET
        ).success
    return ok
