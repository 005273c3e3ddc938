import dagster as dg

from pipelines.ingestion import assets, checks

defs = dg.Definitions(
    assets=[assets.tracks, assets.feedback_events],
    asset_checks=[checks.tracks_have_unique_ids, checks.events_reference_known_tracks],
)
