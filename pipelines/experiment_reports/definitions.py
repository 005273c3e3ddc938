import dagster as dg

from echotune.settings import Settings
from pipelines.experiment_reports import assets


def build(settings: Settings) -> dg.Definitions:
    # the demo experiment is simulated on the synthetic users: it exists only with the synthetic source
    return dg.Definitions(assets=[assets.experiment_report] if "synthetic" in settings.enabled_sources else [])
