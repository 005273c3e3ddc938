import dagster as dg

from core.settings import Settings
from pipelines.automation.jobs import TRAINS
from pipelines.ingestion.definitions import event_sources
from pipelines.training import assets, checks, rollback, search

search_job = dg.define_asset_job(
    "search_hyperparameters", selection=dg.AssetSelection.assets(search.hyperparameter_search), tags=TRAINS
)


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            assets.interactions_asset(event_sources(settings)),
            assets.recommender_model,
            assets.serving_vectors,
            assets.catalog_extension,
            search.hyperparameter_search,
        ],
        asset_checks=[checks.interactions_checks, checks.model_beats_popularity, checks.serving_checks],
        jobs=[search_job, rollback.rollback_champion],
    )
