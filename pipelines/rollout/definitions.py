import dagster as dg

from core.settings import Settings
from pipelines.rollout import assets, sensors


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[assets.model_rollout], jobs=[sensors.rollout_job], sensors=[sensors.build_sensor(settings)]
    )
