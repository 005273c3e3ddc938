"""The code location: every domain's definitions merged, with resources built from the settings."""

import json
from datetime import timedelta

import dagster as dg

from core.settings import Settings, get_settings
from pipelines.experiment_reports import definitions as experiment_report_defs
from pipelines.ingestion import definitions as ingestion_defs
from pipelines.resources import (
    ExperimentsResource,
    IngestionResource,
    MlflowResource,
    OfflineStoreResource,
    RedisResource,
    SpotifyApiResource,
    SyntheticDataResource,
    TrainingResource,
)
from pipelines.training import definitions as training_defs

LIVE_FEEDBACK = dg.AssetSelection.assets("feedback_events")
REPORTS = dg.AssetSelection.assets("experiment_report")
SEARCH = dg.AssetSelection.assets("hyperparameter_search")
# one run for everything unpartitioned; live feedback (by day) and experiment reports (by experiment)
# have jobs of their own, and the hyperparameter search runs when a data scientist launches it
everything_job = dg.define_asset_job("materialize_everything", selection=dg.AssetSelection.all() - LIVE_FEEDBACK - REPORTS - SEARCH)
drain_job = dg.define_asset_job("drain_feedback", selection=LIVE_FEEDBACK)


@dg.schedule(job=drain_job, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
def drain_feedback_every_15_minutes(context: dg.ScheduleEvaluationContext):
    """Persist today's accepted feedback (and, just after midnight, finish yesterday's)."""
    now = context.scheduled_execution_time
    days = [now.date()] + ([now.date() - timedelta(days=1)] if now.hour == 0 else [])
    return [dg.RunRequest(run_key=f"{d}-{now.isoformat()}", partition_key=d.isoformat()) for d in days]


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "store": OfflineStoreResource(data_dir=str(settings.data_dir), var_dir=str(settings.var_dir)),
        "redis": RedisResource(url=settings.redis_url or "", prefix=settings.redis_prefix, embedded_dir=str(settings.layout.redis),
                               embedded_maxmemory=settings.embedded_redis_maxmemory),
        "mlflow": MlflowResource(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_root=str(settings.mlflow_artifact_root),
            experiment=settings.mlflow_experiment,
            registered_model=settings.registered_model,
            promotion_metric=settings.promotion_metric,
            promotion_margin=settings.promotion_margin,
        ),
        "synthetic": SyntheticDataResource(
            tracks=settings.synth_tracks, users=settings.synth_users, events=settings.synth_events,
            days=settings.synth_days, seed=settings.synth_seed,
        ),  # fmt: skip
        "training": TrainingResource(algorithm=settings.algorithm, params_json=json.dumps(settings.train_params)),
        "ingestion": IngestionResource(
            track_files=[str(p) for p in settings.paths(settings.track_files)],
            history_files=[str(p) for p in settings.paths(settings.history_files)],
            interaction_files=[str(p) for p in settings.paths(settings.interaction_files)],
            history_user=settings.history_user,
            reject_threshold=settings.reject_threshold,
            # secrets reach Dagster only through EnvVar, so they never appear in run config
            pseudonym_key=dg.EnvVar("ECHOTUNE_PSEUDONYM_KEY") if settings.pseudonym_key else "",
            pseudonym_key_file=str(settings.layout.pseudonym_key),
        ),
        "experiments": ExperimentsResource(definitions_dir=str(settings.experiments_dir)),
        "spotify": SpotifyApiResource(
            client_id=settings.spotify_client_id or "unset",
            client_secret=dg.EnvVar("ECHOTUNE_SPOTIFY_CLIENT_SECRET") if "spotify_api" in settings.enabled_sources else "unset",
            base_url=settings.spotify_base_url,
            accounts_url=settings.spotify_accounts_url,
            max_tracks=settings.spotify_max_tracks,
        ),
    }


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        ingestion_defs.build(settings),
        training_defs.build(settings),
        experiment_report_defs.build(settings),
        dg.Definitions(jobs=[everything_job, drain_job], schedules=[drain_feedback_every_15_minutes], resources=resources_from(settings)),
    )


defs = build_defs(get_settings())
