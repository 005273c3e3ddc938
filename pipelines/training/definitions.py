import dagster as dg

from echotune.settings import Settings
from pipelines.ingestion.definitions import event_sources
from pipelines.training import assets


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[assets.interactions_asset(event_sources(settings)), assets.recommender_model, assets.serving_vectors]
    )
