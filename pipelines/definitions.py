"""The code location: every domain's definitions merged, with resources built from the settings."""

import dagster as dg

from echotune.settings import Settings, get_settings
from pipelines.experiment_reports import definitions as experiment_reports
from pipelines.ingestion import definitions as ingestion
from pipelines.resources import (
    MlflowResource,
    OfflineStoreResource,
    RedisResource,
    SyntheticDataResource,
    TrainingResource,
)
from pipelines.training import definitions as training


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "store": OfflineStoreResource(data_dir=str(settings.data_dir)),
        "redis": RedisResource(url=settings.redis_url or "", prefix=settings.redis_prefix, embedded_dir=str(settings.redis_dir)),
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
        "training": TrainingResource(
            algorithm=settings.algorithm, epochs=settings.train_epochs,
            no_components=settings.train_components, num_threads=settings.train_threads,
        ),  # fmt: skip
    }


all_assets_job = dg.define_asset_job("materialize_everything", selection=dg.AssetSelection.all())


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(
        ingestion.defs,
        training.defs,
        experiment_reports.defs,
        dg.Definitions(jobs=[all_assets_job], resources=resources_from(settings)),
    )


defs = build_defs(get_settings())
