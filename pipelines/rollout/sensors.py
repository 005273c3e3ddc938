"""The rollout sensor: after every drain, a look at the running rollout (the ``rollout`` job)."""

import dagster as dg

from core.settings import Settings
from pipelines.automation.jobs import tags
from pipelines.automation.sensors import busy, sensor_status
from pipelines.resources import MlflowResource, RedisResource, RolloutResource

rollout_job = dg.define_asset_job(
    "rollout",
    selection=dg.AssetSelection.assets("model_rollout"),
    description="Judge the running rollout on the outcomes drained so far: hold, step up, promote or roll back.",
)
DRAINED = dg.AssetKey("feedback_events")


def build_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        job=rollout_job,
        minimum_interval_seconds=min(30, settings.drain_every_seconds),
        default_status=sensor_status(settings),
    )
    def watch_rollout(
        context: dg.SensorEvaluationContext, redis: RedisResource, mlflow: MlflowResource, rollout: RolloutResource
    ):
        """A run of ``rollout`` after every drain (a new materialization of feedback_events) while a rollout runs."""
        state = rollout.rollouts(redis, mlflow).current()
        if state is None or not state.running:
            return dg.SkipReason("no rollout is running")
        drained = context.instance.get_latest_materialization_event(DRAINED)
        if drained is None or drained.timestamp < state.started_at:
            return dg.SkipReason(f"no drain since the rollout of version {state.version} started")
        stamp = f"{drained.timestamp:.6f}"
        if context.cursor == stamp:
            return dg.SkipReason(f"no drain since the last look at the rollout of version {state.version}")
        if busy(context.instance, rollout_job.name):
            return dg.SkipReason("a look at the rollout is still running")
        context.update_cursor(stamp)
        return dg.RunRequest(
            run_key=f"rollout-{state.experiment_id}-{stamp}",
            tags=tags(
                "rollout",
                f"a drain stored new feedback: look at the rollout of version {state.version} at share {state.share:g}",
            ),
        )

    return watch_rollout
