import dagster as dg

from pipelines.training import assets

defs = dg.Definitions(assets=[assets.interactions, assets.recommender_model, assets.serving_vectors])
