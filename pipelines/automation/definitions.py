"""The loop's definitions: its jobs, sensors, the daily retrain and the sensor that evaluates the
assets' automation conditions (the drift monitor after each drain)."""

import dagster as dg

from core.settings import Settings
from pipelines.automation.jobs import (
    catalog_job,
    drain_job,
    drift_job,
    everything_job,
    publish_job,
    retrain_job,
    tags,
)
from pipelines.automation.sensors import build_sensors, sensor_status


def build(settings: Settings) -> dg.Definitions:
    running = settings.automation

    @dg.schedule(
        job=retrain_job,
        cron_schedule=settings.retrain_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
    def retrain_daily(context: dg.ScheduleEvaluationContext):
        """A new model every day (ECHOTUNE_RETRAIN_CRON), whatever the volume: its data ends yesterday."""
        when = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"daily-{when.isoformat()}", tags=tags("daily", f"daily retrain ({settings.retrain_cron} UTC)")
        )

    conditions = dg.AutomationConditionSensorDefinition(
        "asset_automation",
        target=dg.AssetSelection.all(),
        minimum_interval_seconds=30,
        default_status=sensor_status(settings),
    )
    return dg.Definitions(
        jobs=[everything_job, drain_job, retrain_job, publish_job, catalog_job, drift_job],
        schedules=[retrain_daily],
        sensors=[*build_sensors(settings), conditions],
    )
