"""Track sources and the merged catalog. Which sources exist depends on the configuration."""

import dagster as dg

from core.ingest.catalog import build_catalog, upsert_source
from core.ingest.service import ingest_spotify_api, ingest_track_files, tracks_to_enrich
from core.synthetic import SyntheticWorld
from pipelines.ingestion.accounting import import_materialization, rejects_check_spec
from pipelines.resources import IngestionResource, OfflineStoreResource, SpotifyApiResource, SyntheticDataResource
from pipelines.step_cost import measured

GROUP = "ingestion"


@dg.asset(group_name=GROUP, kinds={"parquet"})
@measured
def synthetic_catalog(store: OfflineStoreResource, synthetic: SyntheticDataResource) -> dg.MaterializeResult:
    """The generated catalog: artists, genres and audio features drawn per genre (the default data set)."""
    catalog = SyntheticWorld.generate(synthetic.tracks, synthetic.users, synthetic.seed).tracks
    counts = upsert_source(store.tables, "synthetic", catalog)
    return dg.MaterializeResult(metadata={"dagster/row_count": len(catalog), **counts})


@dg.asset(group_name=GROUP, kinds={"parquet"}, check_specs=[rejects_check_spec("track_files")])
@measured
def track_files(store: OfflineStoreResource, ingestion: IngestionResource) -> dg.MaterializeResult:
    """Track metadata and audio features from CSV/Parquet/JSON files in Spotify's schema."""
    paths = ingestion.paths("track_files")
    result = ingest_track_files(store.tables, paths)
    return import_materialization(result, ingestion.reject_threshold, files=len(paths))


def spotify_api_tracks_asset(upstream: list[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name="spotify_api_tracks",
        group_name=GROUP,
        kinds={"parquet", "spotify"},
        deps=upstream,
        check_specs=[rejects_check_spec("spotify_api_tracks")],
    )
    @measured
    def spotify_api_tracks(
        context: dg.AssetExecutionContext,
        store: OfflineStoreResource,
        spotify: SpotifyApiResource,
        ingestion: IngestionResource,
    ) -> dg.MaterializeResult:
        """Metadata, audio features and genres from the Web API for tracks seen in the catalog or the
        event log and not fetched yet. Without audio-features access (403) tracks are still stored."""
        ids = tracks_to_enrich(store.tables, spotify.max_tracks)
        client = spotify.client()
        try:
            result = ingest_spotify_api(store.tables, client, ids)
        finally:
            client.close()
        if not result.extra.get("audio_features_available", True):
            context.log.warning(result.extra["audio_features_error"])
        return import_materialization(result, ingestion.reject_threshold)

    return spotify_api_tracks


def tracks_asset(sources: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name="tracks", group_name=GROUP, kinds={"parquet"}, deps=sources)
    @measured
    def tracks(store: OfflineStoreResource) -> dg.MaterializeResult:
        """The catalog: every track source merged (first non-null value per column, the Web API first)."""
        catalog = build_catalog(store.tables)
        genres = catalog["genres"].explode().dropna()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(catalog),
                "path": dg.MetadataValue.path(str(store.tables.tracks_path)),
                "sources": ", ".join(store.tables.track_sources()),
                "share_with_audio_features": float(catalog["energy"].notna().mean()) if len(catalog) else 0.0,
                "genres": int(genres.nunique()),
                "preview": dg.MetadataValue.md(
                    catalog.head(10)[["track_id", "name", "artists", "genres", "energy", "tempo"]].to_markdown(
                        index=False
                    )
                ),
            }
        )

    return tracks
