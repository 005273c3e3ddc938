"""Ingestion operations: read a source, store what is valid, account for the rest.

The Dagster assets and the ``echotune ingest`` commands both call these, so an import behaves the same
from the UI and from a script. Every operation is idempotent: running it again on the same input
leaves the store as it was (``new_*`` counts in the result say what actually changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
import redis

from core.contracts.redis_keys import RedisKeys
from core.ingest.catalog import build_catalog, upsert_source
from core.ingest.history import HistoryImporter
from core.ingest.interaction_logs import LOG_SCHEMA, import_interaction_logs
from core.ingest.live_feedback import drain_day
from core.ingest.pseudonyms import Pseudonymizer, load_or_create_key
from core.ingest.result import ImportResult
from core.ingest.spotify_api import SpotifyClient
from core.ingest.track_files import import_track_files
from core.settings import Settings
from core.storage import read_frame
from core.tables import OfflineStore


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    key = settings.pseudonym_key
    raw = bytes.fromhex(key.get_secret_value()) if key else load_or_create_key(settings.layout.pseudonym_key)
    return Pseudonymizer(raw)


def _catalog_or_empty(store: OfflineStore) -> pd.DataFrame:
    return (
        store.read_tracks()
        if store.tracks_path.exists()
        else pd.DataFrame(columns=["track_id", "name", "artists", "duration_ms"])
    )


def ingest_track_files(store: OfflineStore, paths: Sequence[Path], progress=None) -> ImportResult:
    tracks, result = import_track_files(paths, progress=progress)
    result.extra.update(upsert_source(store, "track_files", tracks))
    result.save_rejects(store)
    result.extra["catalog_tracks"] = len(build_catalog(store))
    return result


def ingest_history(
    store: OfflineStore,
    paths: Sequence[Path],
    pseudonyms: Pseudonymizer,
    user: str | None = None,
    progress=None,
    workers: int | None = None,
) -> ImportResult:
    importer = HistoryImporter(pseudonyms, _catalog_or_empty(store))
    events, tracks, result = importer.run(paths, user=user, progress=progress, workers=workers)
    added = store.write_events(events, part="spotify_history", merge=True, fsync=False, by="month")
    result.extra["new_events"] = sum(added.values())
    result.extra["months"] = len(added)
    result.extra.update(upsert_source(store, "spotify_history", tracks))
    result.save_rejects(store)
    result.extra["catalog_tracks"] = len(build_catalog(store))
    return result


def ingest_interaction_logs(
    store: OfflineStore, paths: Sequence[Path], source: str = "interaction_logs", kind: str = "auto", progress=None
) -> ImportResult:
    logs, result = import_interaction_logs(paths, source=source, kind=kind, progress=progress)
    path = store.interaction_source_path(source)
    before = 0
    if path.exists():
        existing = read_frame(path)
        before = len(existing)
        logs = pd.concat([existing, logs], ignore_index=True).drop_duplicates(
            ["user_id", "item_id", "timestamp"], keep="last"
        )
    stored = store.write_interaction_source(source, logs[LOG_SCHEMA.names], LOG_SCHEMA)
    result.extra["new_rows"] = stored - before
    result.extra["table_rows"] = stored
    result.save_rejects(store)
    return result


def ingest_spotify_api(store: OfflineStore, client: SpotifyClient, ids: Sequence[str]) -> ImportResult:
    fetched = client.fetch(ids)
    fetched.result.extra.update(upsert_source(store, "spotify_api", fetched.tracks))
    fetched.result.save_rejects(store)
    fetched.result.extra["catalog_tracks"] = len(build_catalog(store))
    return fetched.result


def tracks_to_enrich(store: OfflineStore, limit: int) -> list[str]:
    """Track ids worth asking the Web API about: in any track source or the event log, not yet
    fetched from the API."""
    ids: set[str] = set()
    for source in store.track_sources():
        if source != "spotify_api":
            ids |= set(read_frame(store.track_source_path(source), columns=["track_id"])["track_id"])
    if store.events_dir.exists():
        ids |= set(store.read_events()["track_id"])
    fetched_path = store.track_source_path("spotify_api")
    if fetched_path.exists():
        ids -= set(read_frame(fetched_path, columns=["track_id"])["track_id"])
    return sorted(ids)[:limit]


def drain_feedback(client: redis.Redis, keys: RedisKeys, store: OfflineStore, days: Sequence[date]) -> ImportResult:
    """Drain the stream for ``days`` into the live event partitions; one combined result."""
    total = ImportResult(source="live_feedback")
    for day in days:
        one = drain_day(client, keys, store, day)
        total.read += one.read
        total.accepted += one.accepted
        total.duplicates += one.duplicates
        total.rejects.rows += one.rejects.rows
        total.extra["trimmed"] = total.extra.get("trimmed", 0) + one.extra.get("trimmed", 0)
    total.extra["days"] = [str(d) for d in days]
    total.save_rejects(store)
    return total
