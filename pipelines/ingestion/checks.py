"""Data quality checks on ingested tables."""


import dagster as dg

from pipelines.ingestion.assets import feedback_events, tracks
from pipelines.resources import OfflineStoreResource


@dg.asset_check(asset=tracks, blocking=True)
def tracks_have_unique_ids(store: OfflineStoreResource) -> dg.AssetCheckResult:
    """Every catalog row has its own track id (duplicates would split a track's plays)."""
    catalog = store.tables.read_tracks()
    duplicates = int(catalog["track_id"].duplicated().sum())
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": duplicates})


@dg.asset_check(asset=feedback_events, blocking=True, additional_deps=[tracks])
def events_reference_known_tracks(store: OfflineStoreResource) -> dg.AssetCheckResult:
    """Every event's track is in the catalog (an unknown track cannot be trained on or served)."""
    known = set(store.tables.read_tracks()["track_id"])
    events = store.tables.read_events()
    unknown = int((~events["track_id"].isin(known)).sum())
    return dg.AssetCheckResult(passed=unknown == 0, metadata={"events": len(events), "unknown_track_events": unknown})
