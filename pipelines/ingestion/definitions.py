import dagster as dg

from core.settings import Settings
from pipelines.ingestion import checks, erasure, events, tracks


def build(settings: Settings) -> dg.Definitions:
    """The configured sources' assets, the catalog, and live feedback (always on)."""
    sources = settings.enabled_sources
    track_sources = (["synthetic_catalog"] if "synthetic" in sources else []) + (
        ["track_files"] if "track_files" in sources else []
    )
    assets: list = [
        a
        for name, a in (("synthetic_catalog", tracks.synthetic_catalog), ("track_files", tracks.track_files))
        if name in track_sources
    ]
    if "spotify_history" in sources:
        assets.append(events.listening_history_asset(track_sources))
    if "spotify_api" in sources:
        assets.append(
            tracks.spotify_api_tracks_asset(
                [*track_sources, *(["listening_history"] if "spotify_history" in sources else [])]
            )
        )
    if "synthetic" in sources:
        assets.append(events.synthetic_events)
    if "interaction_logs" in sources:
        assets.append(events.interaction_logs)
    catalog_inputs = [
        a.key.to_user_string()
        for a in assets
        if a.key.to_user_string() in {*track_sources, "listening_history", "spotify_api_tracks"}
    ]
    partitions = dg.DailyPartitionsDefinition(start_date=settings.partitions_start, end_offset=1)
    assets += [
        tracks.tracks_asset(catalog_inputs),
        events.feedback_events_asset(partitions),
        erasure.user_erasures_asset(event_sources(settings)),
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[
            checks.tracks_have_unique_ids,
            checks.tracks_have_audio_features,
            events.feedback_events_check(partitions),
        ],
    )


def event_sources(settings: Settings) -> list[str]:
    """Assets whose output training reads beside the catalog."""
    sources = settings.enabled_sources
    named = {
        "synthetic": "synthetic_events",
        "spotify_history": "listening_history",
        "interaction_logs": "interaction_logs",
    }
    return [asset for source, asset in named.items() if source in sources] + ["feedback_events"]
