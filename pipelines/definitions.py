"""The code location: every domain's definitions merged, with resources built from the settings."""

import json

import dagster as dg

from core.database import MLFLOW_SCHEMA
from core.settings import Settings, get_settings
from core.urls import has_password, redacted
from pipelines.automation import definitions as automation_defs
from pipelines.experiment_reports import definitions as experiment_report_defs
from pipelines.ingestion import definitions as ingestion_defs
from pipelines.monitoring import definitions as monitoring_defs
from pipelines.resources import (
    ExperimentsResource,
    IngestionResource,
    MlflowResource,
    MonitoringResource,
    OfflineStoreResource,
    RedisResource,
    RolloutResource,
    SpotifyApiResource,
    SyntheticDataResource,
    TrainingResource,
)
from pipelines.rollout import definitions as rollout_defs
from pipelines.training import definitions as training_defs


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Every resource, configured from ``settings``. A URL that carries a password is passed as the
    name of its environment variable (see :func:`secret`), never as a value."""
    database = settings.database
    # MLflow's store is the database's mlflow schema unless a tracking URI of its own was set
    mlflow_in_database = database is not None and settings.mlflow_tracking_uri == database.url(MLFLOW_SCHEMA)
    return {
        "store": OfflineStoreResource(
            data_dir=settings.data_location,
            var_dir=str(settings.var_dir),
            s3_endpoint_url=settings.s3_endpoint_url or "",
        ),
        "redis": RedisResource(
            url=secret("redis_url", settings.redis_url),
            cluster=settings.redis_cluster,
            prefix=settings.redis_prefix,
            embedded_dir=str(settings.layout.redis),
            embedded_maxmemory=settings.embedded_redis_maxmemory,
        ),
        "mlflow": MlflowResource(
            tracking_uri="" if mlflow_in_database else secret("mlflow_tracking_uri", settings.mlflow_tracking_uri),
            database_url=secret("database_url", settings.database_url) if mlflow_in_database else "",
            artifact_root=settings.mlflow_artifact_location,
            s3_endpoint_url=settings.s3_endpoint_url or "",
            experiment=settings.mlflow_experiment,
            registered_model=settings.registered_model,
            promotion_metric=settings.promotion_metric,
            promotion_margin=settings.promotion_margin,
            ui_url=f"http://{settings.mlflow_host}:{settings.mlflow_port}",
            ann_min_tracks=settings.ann_min_tracks,
        ),
        "monitoring": MonitoringResource(
            drift_threshold=settings.drift_threshold,
            feedback_backlog_max=settings.feedback_backlog_max,
            model_max_age_hours=settings.model_max_age_hours,
            retrain_after_events=settings.retrain_after_events,
            keep_versions=settings.keep_versions,
        ),
        "synthetic": SyntheticDataResource(
            tracks=settings.synth_tracks,
            users=settings.synth_users,
            events=settings.synth_events,
            days=settings.synth_days,
            seed=settings.synth_seed,
        ),
        "training": TrainingResource(
            algorithm=settings.algorithm,
            params_json=json.dumps(settings.train_params),
            recency_half_life_days=settings.recency_half_life_days,
        ),
        "ingestion": IngestionResource(
            track_files=[str(p) for p in settings.paths(settings.track_files)],
            history_files=[str(p) for p in settings.paths(settings.history_files)],
            interaction_files=[str(p) for p in settings.paths(settings.interaction_files)],
            history_user=settings.history_user,
            reject_threshold=settings.reject_threshold,
            dead_letter_days=settings.dead_letter_days,
            # secrets reach Dagster only through EnvVar, so they never appear in run config
            pseudonym_key=dg.EnvVar("ECHOTUNE_PSEUDONYM_KEY") if settings.pseudonym_key else "",
            pseudonym_key_file=str(settings.layout.pseudonym_key),
        ),
        "experiments": ExperimentsResource(definitions_dir=str(settings.experiments_dir)),
        "rollout": RolloutResource(
            mode=settings.rollout,
            ramp=list(settings.ramp),
            ctr_margin=settings.rollout_ctr_margin,
            min_users=settings.rollout_min_users,
            alpha=settings.rollout_alpha,
            max_error_rate=settings.rollout_max_error_rate,
            max_p95_ms=settings.rollout_max_p95_ms,
            min_requests=settings.rollout_min_requests,
        ),
        "spotify": SpotifyApiResource(
            client_id=settings.spotify_client_id or "unset",
            client_secret=dg.EnvVar("ECHOTUNE_SPOTIFY_CLIENT_SECRET")
            if "spotify_api" in settings.enabled_sources
            else "unset",
            base_url=settings.spotify_base_url,
            accounts_url=settings.spotify_accounts_url,
            max_tracks=settings.spotify_max_tracks,
        ),
    }


class SecretNotInEnvironment(ValueError):
    """A setting that carries a password was not given in the process environment."""


def secret(setting: str, value: str | None) -> str | dg.EnvVar:
    """``value`` as resource config; when it carries a password, ``dg.EnvVar`` of the setting's variable
    instead (Dagster stores the variable's name in run snapshots and shows the name in its UI; the value
    is read where the step runs). A ValueError naming the variable when the process environment does not
    hold that value (set in ``.env`` or in code: the run's processes could not read it):
    :class:`SecretNotInEnvironment`."""
    if not has_password(value):
        return value or ""
    variable = f"ECHOTUNE_{setting.upper()}"
    if dg.EnvVar(variable).get_value() != value:
        raise SecretNotInEnvironment(
            f"{variable} carries a password ({redacted(value)}): set it in the process environment (not in .env "
            "or code), so Dagster records the variable's name and never the password"
        )
    return dg.EnvVar(variable)


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        ingestion_defs.build(settings),
        training_defs.build(settings),
        experiment_report_defs.build(settings),
        monitoring_defs.build(settings),
        automation_defs.build(settings),
        rollout_defs.build(settings),
        # every job runs its steps in processes of their own (at most one per CPU; the launchpad's
        # execution.config.multiprocess.max_concurrent sets fewer for one run); said here, not left to the default
        dg.Definitions(resources=resources_from(settings), executor=dg.multiprocess_executor),
    )


defs = build_defs(get_settings())
