"""The catalog: every track source keeps its own table; ``tracks.parquet`` merges them.

Merging takes, per track and column, the first non-null value in source priority order (the Web API
is authoritative for metadata, feature files next, history exports and the synthetic set last), so a
track known only from a listening history is still in the catalog, just without audio features.
"""

from __future__ import annotations

import pandas as pd

from core.contracts.tracks import TRACK_SCHEMA
from core.ingest.track_files import merge_duplicates, to_schema
from core.parquet_files import write_parquet_atomic
from core.storage import read_frame
from core.tables import OfflineStore

SOURCE_PRIORITY = ("spotify_api", "track_files", "spotify_history", "synthetic")


def upsert_source(store: OfflineStore, source: str, tracks: pd.DataFrame) -> dict[str, int]:
    """Merge ``tracks`` into the source's table: incoming non-null values win, nothing else is lost.
    Re-importing the same rows changes nothing. Returns counts of new and updated track ids."""
    path = store.track_source_path(source)
    incoming = to_schema(tracks)
    if path.exists():
        existing = read_frame(path)
        known = set(existing["track_id"])
        merged = merge_duplicates(pd.concat([incoming, existing], ignore_index=True))
    else:
        known, merged = set(), merge_duplicates(incoming)
    write_parquet_atomic(to_schema(merged), path, TRACK_SCHEMA)
    new = int((~incoming["track_id"].isin(known)).sum())
    return {"new_tracks": new, "updated_tracks": len(incoming) - new, "source_tracks": len(merged)}


def build_catalog(store: OfflineStore) -> pd.DataFrame:
    """Merge every source table into ``tracks.parquet``; returns the catalog."""
    sources = store.track_sources()
    ordered = [s for s in SOURCE_PRIORITY if s in sources] + [s for s in sources if s not in SOURCE_PRIORITY]
    frames = [read_frame(store.track_source_path(s)) for s in ordered]
    catalog = (
        to_schema(merge_duplicates(pd.concat(frames, ignore_index=True)))
        if frames
        else to_schema(pd.DataFrame(columns=["track_id"]))
    )
    store.write_tracks(catalog)
    return catalog
