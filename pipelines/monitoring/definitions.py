import dagster as dg

from core.settings import Settings
from pipelines.monitoring import assets


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=[assets.feedback_drift])
