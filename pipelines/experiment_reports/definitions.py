import dagster as dg

from pipelines.experiment_reports import assets

defs = dg.Definitions(assets=[assets.experiment_report])
