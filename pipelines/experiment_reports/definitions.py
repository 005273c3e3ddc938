from datetime import UTC, datetime

import dagster as dg

from core.settings import Settings
from experiments.rollout import LAYER as ROLLOUT_LAYER
from experiments.store import ExperimentStore
from pipelines.automation.jobs import tags
from pipelines.automation.sensors import sensor_status
from pipelines.experiment_reports import assets, checks
from pipelines.resources import RedisResource

reports_job = dg.define_asset_job(
    "experiment_reports",
    selection=dg.AssetSelection.assets(assets.experiment_report),
    partitions_def=assets.EXPERIMENTS,
)


def running_experiment_reports(context: dg.SensorEvaluationContext, redis: RedisResource):
    """Once a day, a fresh report for every running experiment (adding partitions for new ones). A rollout's
    experiment (layer ``rollout``) has its own report, written at every look by ``model_rollout``: its
    share moves, which the A/B analysis would read as a sample ratio mismatch."""
    running = [e.id for e in ExperimentStore(redis.client, redis.key_layout).running() if e.layer != ROLLOUT_LAYER]
    known = set(context.instance.get_dynamic_partitions(assets.EXPERIMENTS.name))
    new = [i for i in running if i not in known]
    today = datetime.now(UTC).date().isoformat()
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{i}-{today}",
                partition_key=i,
                tags=tags("daily_report", f"daily report of running experiment {i}"),
            )
            for i in running
        ],
        dynamic_partitions_requests=[assets.EXPERIMENTS.build_add_request(new)] if new else [],
    )


def build(settings: Settings) -> dg.Definitions:
    synthetic = "synthetic" in settings.enabled_sources  # the demo's experiment runs on synthetic users only
    demo = [assets.demo_experiment_events] if synthetic else []
    return dg.Definitions(
        assets=[assets.experiment_definitions_asset(synthetic), *demo, assets.experiment_report],
        asset_checks=[checks.running_experiments_are_servable],
        jobs=[reports_job],
        # started like every sensor: stopped when ECHOTUNE_AUTOMATION is off (it ran regardless, issue 21)
        sensors=[
            dg.sensor(job=reports_job, minimum_interval_seconds=600, default_status=sensor_status(settings))(
                running_experiment_reports
            )
        ],
    )
