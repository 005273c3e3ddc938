"""What the API holds in memory per model version: the item table, the item vectors, id lookups and a
popularity ranking. User vectors stay in Redis and are fetched per request.

:class:`ModelCache` follows the Redis alias (``champion`` by default): when the alias moves, the new
version is loaded completely and then swapped in with one reference assignment, so a request sees
either the old version or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from echotune.vectorstore import PublishedVersion, VectorStore

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version: str
    algorithm: str
    items: pd.DataFrame
    vectors: np.ndarray  # float32 (n_items, d)
    index: dict[str, int]  # track id -> row
    popularity_order: np.ndarray  # item rows, most popular first
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def from_published(cls, published: PublishedVersion) -> "LoadedModel":
        items = published.items.reset_index(drop=True)
        popularity = items["popularity"].to_numpy(dtype=np.float32) if "popularity" in items else np.zeros(len(items))
        return cls(
            version=published.version,
            algorithm=published.meta.get("algorithm", "unknown"),
            items=items,
            vectors=np.ascontiguousarray(published.item_vectors, dtype=np.float32),
            index={t: i for i, t in enumerate(items["track_id"].astype(str))},
            popularity_order=np.argsort(-popularity, kind="stable"),
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    def rows(self, track_ids: set[str] | list[str]) -> np.ndarray:
        return np.fromiter((self.index[t] for t in track_ids if t in self.index), dtype=np.int64)


class ModelCache:
    """Loaded versions by alias, refreshed from Redis at most every ``refresh_seconds``."""

    def __init__(self, store_factory, refresh_seconds: float = 2.0) -> None:
        self._store_factory = store_factory  # () -> VectorStore (sync client; loads run in a thread)
        self.refresh_seconds = refresh_seconds
        self._by_alias: dict[str, LoadedModel] = {}
        self._checked: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def get(self, alias: str = "champion") -> LoadedModel | None:
        return self._by_alias.get(alias)

    async def refresh(self, alias: str = "champion", force: bool = False) -> LoadedModel | None:
        """Reload ``alias`` if it moved since the last check. Redis errors keep the loaded version."""
        now = time.monotonic()
        if not force and now - self._checked.get(alias, 0.0) < self.refresh_seconds:
            return self._by_alias.get(alias)
        async with self._lock:
            self._checked[alias] = time.monotonic()
            current = self._by_alias.get(alias)
            try:
                loaded = await asyncio.to_thread(self._load_if_moved, alias, current.version if current else None)
            except Exception as exc:  # Redis down or version half-deleted: keep serving what we have
                log.warning("could not refresh model alias %s: %s", alias, exc)
                return current
            if loaded is not None:
                self._by_alias[alias] = loaded  # the atomic swap
                log.info("serving model version %s (%s) for alias %s", loaded.version, loaded.algorithm, alias)
            return self._by_alias.get(alias)

    def _load_if_moved(self, alias: str, current_version: str | None) -> LoadedModel | None:
        store: VectorStore = self._store_factory()
        version = store.alias(alias)
        if version is None or version == current_version:
            return None
        return LoadedModel.from_published(store.load(version))
