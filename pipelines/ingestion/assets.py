"""Source data into the offline store: the track catalog and the feedback event log."""


import dagster as dg
import pandas as pd

from echotune.synthetic import SyntheticWorld
from pipelines.resources import OfflineStoreResource, SyntheticDataResource


def _world(synthetic: SyntheticDataResource) -> SyntheticWorld:
    return SyntheticWorld.generate(synthetic.tracks, synthetic.users, synthetic.seed)


@dg.asset(group_name="ingestion", kinds={"parquet"})
def tracks(store: OfflineStoreResource, synthetic: SyntheticDataResource) -> dg.MaterializeResult:
    """The track catalog: Spotify track metadata and audio features, one row per track id."""
    catalog = _world(synthetic).tracks
    path = store.tables.write_tracks(catalog)
    with_features = catalog["energy"].notna().mean()
    genres = catalog["genres"].explode().value_counts()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(catalog),
            "path": dg.MetadataValue.path(str(path)),
            "source": "synthetic",
            "share_with_audio_features": float(with_features),
            "genres": len(genres),
            "preview": dg.MetadataValue.md(catalog.head(10)[["track_id", "name", "artists", "genres", "energy", "tempo"]].to_markdown(index=False)),
        }
    )


@dg.asset(group_name="ingestion", kinds={"parquet"}, deps=[tracks])
def feedback_events(store: OfflineStoreResource, synthetic: SyntheticDataResource) -> dg.MaterializeResult:
    """Listening and recommendation events (the event schema), partitioned by UTC day."""
    events = _world(synthetic).events(synthetic.events, days=synthetic.days)
    store.tables.write_events(events, part="synthetic")
    by_type = events["type"].value_counts()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(events),
            "users": int(events["user_id"].nunique()),
            "tracks": int(events["track_id"].nunique()),
            "days": int(events["timestamp"].dt.date.nunique()),
            "first_event": str(events["timestamp"].min()),
            "last_event": str(events["timestamp"].max()),
            "events_by_type": dg.MetadataValue.md(pd.DataFrame({"events": by_type}).to_markdown()),
        }
    )
