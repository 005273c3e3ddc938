"""Data quality checks on the merged catalog."""

import dagster as dg

from pipelines.resources import OfflineStoreResource


@dg.asset_check(asset="tracks", blocking=True)
def tracks_have_unique_ids(store: OfflineStoreResource) -> dg.AssetCheckResult:
    """Every catalog row has its own track id (duplicates would split a track's plays)."""
    catalog = store.tables.read_tracks()
    duplicates = int(catalog["track_id"].duplicated().sum())
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"tracks": len(catalog), "duplicate_ids": duplicates})


@dg.asset_check(asset="tracks", blocking=False)
def tracks_have_audio_features(store: OfflineStoreResource) -> dg.AssetCheckResult:
    """Warns when most tracks lack audio features (content-based ranking and filters then see little)."""
    share = float(store.tables.read_tracks()["energy"].notna().mean())
    return dg.AssetCheckResult(
        passed=share >= 0.5, severity=dg.AssetCheckSeverity.WARN, metadata={"share_with_features": share}
    )
