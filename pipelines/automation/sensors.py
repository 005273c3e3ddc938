"""The loop, as Dagster sensors: feedback drained on a clock; retraining when enough new events arrived
or drift was found; champions moved by hand published; new catalog tracks served without a retrain.

Each sensor asks for runs and says why in their tags; none does the work itself. They start on when
ECHOTUNE_AUTOMATION is on (the default) and the Dagster daemon runs (``dagster dev`` in the demo,
the daemon in a deployment).
"""

import time
from datetime import UTC, datetime

import dagster as dg

from core.ingest.live_feedback import undrained_days
from core.model_registry import CHAMPION
from core.settings import Settings
from core.storage import modified_ns
from core.vectorstore import track_ids_digest
from pipelines.automation.jobs import TRIGGER_TAG, catalog_job, drain_job, publish_job, retrain_job, tags
from pipelines.resources import MlflowResource, MonitoringResource, OfflineStoreResource, RedisResource

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def busy(instance: dg.DagsterInstance, *job_names: str) -> bool:
    """Whether a run of one of ``job_names`` is queued or running (the loop never stacks them up)."""
    return any(
        instance.get_runs(filters=dg.RunsFilter(job_name=name, statuses=IN_PROGRESS), limit=1) for name in job_names
    )


def sensor_status(settings: Settings) -> dg.DefaultSensorStatus:
    """How every sensor of the project starts: running, unless ECHOTUNE_AUTOMATION is off."""
    return dg.DefaultSensorStatus.RUNNING if settings.automation else dg.DefaultSensorStatus.STOPPED


def _trigger_of(instance: dg.DagsterInstance, run_tags: dict[str, str]) -> str | None:
    """What triggered the Dagster run that trained a version (its MLflow run records the run's id)."""
    run = instance.get_run_by_id(run_tags.get("dagster_run_id", "")) if run_tags.get("dagster_run_id") else None
    return None if run is None else run.tags.get(TRIGGER_TAG)


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    status = sensor_status(settings)
    every = settings.drain_every_seconds

    @dg.sensor(job=drain_job, minimum_interval_seconds=every, default_status=status)
    def drain_feedback(context: dg.SensorEvaluationContext, redis: RedisResource):
        """Every ECHOTUNE_DRAIN_EVERY_SECONDS: a run per day with stream entries not stored yet, oldest
        first; the run queue starts them in that order, one at a time (pipelines.instance)."""
        days = undrained_days(redis.client, redis.key_layout)
        if not days:
            return dg.SkipReason("nothing to drain: the feedback stream is empty or holds only entries already stored")
        if busy(context.instance, drain_job.name):
            return dg.SkipReason("a drain is still running")
        tick = int(time.time() // every)
        return [
            dg.RunRequest(
                run_key=f"drain-{day}-{tick}",
                partition_key=day.isoformat(),
                tags=tags("drain", f"every {every} s: the stream holds entries of {day} not stored yet"),
            )
            for day in days
        ]

    @dg.sensor(job=retrain_job, minimum_interval_seconds=min(60, every), default_status=status)
    def retrain_when_needed(
        context: dg.SensorEvaluationContext,
        store: OfflineStoreResource,
        mlflow: MlflowResource,
        monitoring: MonitoringResource,
    ):
        """A new model when ECHOTUNE_RETRAIN_AFTER_EVENTS live events arrived after the newest version's
        training data, or when the drift check failed after it was trained."""
        if busy(context.instance, retrain_job.name, "materialize_everything"):
            return dg.SkipReason("a training run is already queued or running")
        registry = mlflow.registry
        versions = registry.versions()
        if not versions:
            return dg.SkipReason("no model registered yet: run the pipeline once (echotune pipeline)")
        newest = versions[-1]
        trained_until = int(registry.run_tags(newest).get("trained_until_ms", "0"))
        fresh = store.tables.count_events_after(trained_until)
        if fresh >= monitoring.retrain_after_events:
            reason = f"{fresh:,} live events arrived after version {newest}'s training data (threshold {monitoring.retrain_after_events:,})"
            return dg.RunRequest(run_key=f"volume-{newest}", tags=tags("volume", reason))
        drift = context.instance.get_latest_materialization_event(dg.AssetKey("feedback_drift"))
        if drift is not None and drift.timestamp > registry.created_at(newest):
            meta = drift.asset_materialization.metadata
            if meta.get("drift_exceeded") and meta["drift_exceeded"].value:
                # a drift retrain the gate rejected is not asked for again after every drain while the drift
                # lasts (a retrain every few minutes, each rejected): the volume trigger, the daily retrain or
                # a new champion come first
                if (
                    newest != registry.alias(CHAMPION)
                    and _trigger_of(context.instance, registry.run_tags(newest)) == "drift"
                ):
                    return dg.SkipReason(
                        f"version {newest}, trained for drift, was not promoted by the gate: no second drift retrain "
                        "until the volume trigger, the daily retrain or a new champion"
                    )
                share = meta["drift_share"].value
                reason = f"drift share {share:.2f} >= {monitoring.drift_threshold:.2f} in live feedback since version {newest} was trained"
                return dg.RunRequest(run_key=f"drift-{int(drift.timestamp * 1000)}", tags=tags("drift", reason))
        return dg.SkipReason(
            f"{fresh:,} live events since version {newest}'s data (retrain at {monitoring.retrain_after_events:,}); no drift found since"
        )

    @dg.sensor(job=publish_job, minimum_interval_seconds=30, default_status=status)
    def follow_the_champion(context: dg.SensorEvaluationContext, mlflow: MlflowResource, redis: RedisResource):
        """A champion alias moved in MLflow by hand (UI or API) is published to Redis within a minute.
        The gate and the rollback move Redis in the same step, so a difference means someone did."""
        registry = mlflow.registry
        in_mlflow, in_redis = registry.alias(CHAMPION), redis.vectors.alias(CHAMPION)
        if in_mlflow is None or in_mlflow == in_redis:
            return dg.SkipReason(f"Redis serves the MLflow champion (version {in_mlflow})")
        if busy(context.instance, publish_job.name, retrain_job.name, "materialize_everything", "rollback_champion"):
            return dg.SkipReason("a run that publishes is in progress")
        moved_ms = registry.client.get_registered_model(registry.name).last_updated_timestamp
        moved = datetime.fromtimestamp(moved_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        reason = (
            f"champion moved to version {in_mlflow} in MLflow at {moved} (Redis served {in_redis or 'none'}) by hand, in the MLflow "
            "UI or API: not by this pipeline's gate or rollback (MLflow records no user for an alias move)"
        )
        return dg.RunRequest(
            run_key=f"champion-{in_mlflow}-{moved_ms}",
            tags={**tags("champion_moved", reason), "echotune/moved_by": "MLflow UI or API"},
        )

    @dg.sensor(job=catalog_job, minimum_interval_seconds=every, default_status=status)
    def new_catalog_tracks(context: dg.SensorEvaluationContext, store: OfflineStoreResource, redis: RedisResource):
        """Tracks that reached the catalog (an import from the UI or `echotune ingest tracks`) and the
        served version lacks: extend it within one drain interval, without a retrain."""
        path = store.tables.tracks_path
        if not path.exists():
            return dg.SkipReason("no catalog yet")
        stamp = str(modified_ns(path))
        if context.cursor == stamp:
            return dg.SkipReason("the catalog has not changed")
        champion = redis.vectors.alias(CHAMPION)
        if champion is None:
            return dg.SkipReason("no model is served yet")
        # the catalog's ids alone, and the version's digest of its own (kept at publish and extend): the
        # version's tracks, vectors and similarity vectors (gigabytes at 1M tracks) are not loaded per tick
        catalog_ids = store.tables.read_tracks(columns=["track_id"])["track_id"].astype(str)
        if redis.vectors.meta(champion).get("track_ids_digest") == track_ids_digest(catalog_ids):
            context.update_cursor(stamp)
            return dg.SkipReason(f"version {champion} serves every catalog track")
        new = set(catalog_ids) - redis.vectors.track_ids(champion)
        context.update_cursor(stamp)
        if not new:
            return dg.SkipReason(f"version {champion} serves every catalog track")
        return dg.RunRequest(
            run_key=f"catalog-{stamp}",
            tags=tags("new_tracks", f"{len(new):,} catalog tracks that version {champion} does not serve yet"),
        )

    return [drain_feedback, retrain_when_needed, follow_the_champion, new_catalog_tracks]
