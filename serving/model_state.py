"""What the API holds in memory per model version: the item table, the item vectors, precomputed
filter columns, content vectors and a popularity ranking. User vectors stay in Redis.

:class:`ModelCache` follows Redis aliases (``champion``, and any alias an experiment names): when an
alias moves, the new version is loaded completely in a thread and then swapped in with one reference
assignment, so a request sees the old version or the new one, never a mix. Every loaded version is
also written to a local cache folder, so an API that starts while Redis is down still answers
(degraded) from the last version it saw.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import redis.asyncio as aredis

from core.contracts.redis_keys import RedisKeys
from core.vectorstore import PublishedVersion
from models.features import CONTENT_SCALE

log = logging.getLogger(__name__)

CONTINUOUS_FEATURES = tuple(CONTENT_SCALE)
_GENRE_WEIGHT = 0.5  # a shared genre counts about as much as a close sound in content similarity


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class LoadedModel:
    version: str
    algorithm: str
    items: pd.DataFrame
    vectors: np.ndarray  # float32 (n_items, d): score = vectors @ user_vector
    similarity: np.ndarray  # float32 (n_items, k), unit rows: cosine between items
    content: np.ndarray  # float32 (n_items, f), unit rows: audio features + genres (cold start)
    popularity: np.ndarray  # float32 (n_items,)
    index: dict[str, int]  # track id -> row
    explicit: np.ndarray  # bool (n_items,)
    features: dict[str, np.ndarray]  # audio feature -> float32 (NaN where unknown)
    artist_rows: dict[str, np.ndarray]  # artist id -> item rows
    first_artist: np.ndarray  # int code of each item's first artist (diversity)
    meta: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    # response columns as plain arrays (indexing a DataFrame per request costs more than the ranking)
    track_ids: list = field(default=None, repr=False)  # type: ignore[assignment]
    names: list = field(default=None, repr=False)  # type: ignore[assignment]
    artist_names: list = field(default=None, repr=False)  # type: ignore[assignment]
    genre_names: list = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        items = self.items
        # plain lists of JSON-ready values: responses index them per track
        self.track_ids = items["track_id"].astype(str).tolist()
        self.names = [n if isinstance(n, str) else None for n in (items["name"] if "name" in items else [None] * len(items))]
        self.artist_names = [[] if a is None else [str(x) for x in a] for a in (items["artists"] if "artists" in items else [None] * len(items))]
        self.genre_names = [[] if g is None else [str(x) for x in g] for g in (items["genres"] if "genres" in items else [None] * len(items))]
    _genre_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_published(cls, published: PublishedVersion) -> "LoadedModel":
        items = published.items.reset_index(drop=True)
        n = len(items)
        vectors = np.ascontiguousarray(published.item_vectors, dtype=np.float32)
        similarity = published.similarity_vectors if published.similarity_vectors is not None else vectors
        popularity = items["popularity"].to_numpy(dtype=np.float32) if "popularity" in items else np.zeros(n, np.float32)
        features = {
            f: pd.to_numeric(items[f], errors="coerce").to_numpy(dtype=np.float32) if f in items else np.full(n, np.nan, np.float32)
            for f in CONTINUOUS_FEATURES
        }
        artist_lists = items["artist_ids"] if "artist_ids" in items else pd.Series([None] * n)
        artist_rows: dict[str, list[int]] = {}
        first_artist = np.full(n, -1, dtype=np.int64)
        codes: dict[str, int] = {}
        for row, artists in enumerate(artist_lists):
            if artists is None or not len(artists):
                continue
            for artist in artists:
                artist_rows.setdefault(str(artist), []).append(row)
            first_artist[row] = codes.setdefault(str(artists[0]), len(codes))
        return cls(
            version=published.version,
            algorithm=published.meta.get("algorithm", "unknown"),
            items=items,
            vectors=vectors,
            similarity=_unit_rows(np.asarray(similarity, dtype=np.float32)),
            content=_content_vectors(items, features),
            popularity=popularity,
            index={t: i for i, t in enumerate(items["track_id"].astype(str))},
            explicit=items["explicit"].fillna(False).astype(bool).to_numpy() if "explicit" in items else np.zeros(n, bool),
            features=features,
            artist_rows={a: np.array(r, dtype=np.int64) for a, r in artist_rows.items()},
            first_artist=first_artist,
            meta=published.meta,
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    def rows(self, track_ids) -> np.ndarray:
        return np.fromiter((self.index[t] for t in track_ids if t in self.index), dtype=np.int64)

    def genre_mask(self, genre: str) -> np.ndarray:
        mask = self._genre_masks.get(genre)
        if mask is None:
            target = genre.lower()
            genres = self.items["genres"] if "genres" in self.items else pd.Series([None] * self.n_items)
            mask = np.fromiter((g is not None and target in (x.lower() for x in g) for g in genres), dtype=bool, count=self.n_items)
            self._genre_masks[genre] = mask
        return mask


def _freeze_long_lived() -> None:
    """Move what is alive now (the loaded catalog: ~100k lists of artists and genres) out of the
    garbage collector's reach. A full collection otherwise walks all of it, a 60 ms pause for every
    request in flight (measured on a 50,000-track catalog); frozen, it costs nothing. Each call
    thaws and collects first, so a replaced model is freed even if pandas left cycles in it, and
    nothing dead stays frozen: one such pause per model swap instead of one every few seconds."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _content_vectors(items: pd.DataFrame, features: dict[str, np.ndarray]) -> np.ndarray:
    """Unit vectors of standardised audio features plus weighted genre indicators. Tracks without
    features sit at the catalog mean, so genres alone place them."""
    dense = np.stack([features[f] for f in CONTINUOUS_FEATURES], axis=1).astype(np.float64)
    mean, std = np.nanmean(dense, axis=0), np.nanstd(dense, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 0, std, 1.0)
    dense = np.nan_to_num((dense - mean) / std)
    genres = items["genres"] if "genres" in items else pd.Series([None] * len(items))
    names = sorted({g for gs in genres if gs is not None for g in gs})
    column = {g: i for i, g in enumerate(names)}
    onehot = np.zeros((len(items), len(names)), dtype=np.float64)
    for row, gs in enumerate(genres):
        if gs is not None:
            for g in gs:
                onehot[row, column[g]] = 1.0
    scale = _GENRE_WEIGHT * np.sqrt(len(CONTINUOUS_FEATURES))
    return _unit_rows(np.hstack([dense, onehot * scale]))


class DiskCache:
    """The last loaded version of each alias, on local disk (so a restart survives a Redis outage)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(self, alias: str, published: PublishedVersion) -> None:
        target = self.folder / alias
        tmp = self.folder / f".{alias}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        published.items.to_parquet(tmp / "items.parquet")
        np.save(tmp / "vectors.npy", published.item_vectors)
        if published.similarity_vectors is not None:
            np.save(tmp / "similarity.npy", published.similarity_vectors)
        (tmp / "meta.json").write_text(json.dumps(published.meta))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    def load(self, alias: str) -> PublishedVersion | None:
        folder = self.folder / alias
        if not (folder / "meta.json").exists():
            return None
        meta = json.loads((folder / "meta.json").read_text())
        similarity = np.load(folder / "similarity.npy") if (folder / "similarity.npy").exists() else None
        return PublishedVersion(meta["version"], pd.read_parquet(folder / "items.parquet"), np.load(folder / "vectors.npy"), meta, similarity)


class ModelCache:
    """Loaded versions by alias. ``refresh`` checks the alias in Redis at most every
    ``refresh_seconds`` (one GET) and reloads only when it moved."""

    def __init__(self, client: aredis.Redis, keys: RedisKeys, store_factory, disk: DiskCache, refresh_seconds: float = 2.0) -> None:
        self._client = client
        self._keys = keys
        self._store_factory = store_factory  # () -> VectorStore on a sync client: loading runs in a thread
        self._disk = disk
        self.refresh_seconds = refresh_seconds
        self._by_alias: dict[str, LoadedModel] = {}
        self._checked: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def get(self, alias: str = "champion") -> LoadedModel | None:
        return self._by_alias.get(alias)

    def loaded(self) -> dict[str, str]:
        return {alias: model.version for alias, model in self._by_alias.items()}

    async def version(self, version: str) -> LoadedModel | None:
        """A published version by number (experiments may pin one); loaded once, kept."""
        key = f"version:{version}"
        if key in self._by_alias:
            return self._by_alias[key]
        async with self._lock:
            try:
                published = await asyncio.to_thread(self._store_factory().load, version)
                self._by_alias[key] = await asyncio.to_thread(LoadedModel.from_published, published)
                _freeze_long_lived()
            except Exception as exc:
                log.warning("could not load model version %s: %s", version, exc)
                return None
            return self._by_alias[key]

    async def refresh(self, alias: str = "champion", force: bool = False) -> LoadedModel | None:
        """The loaded version of ``alias``, reloaded first if the alias moved. Redis errors keep what
        is loaded (or fall back to the disk cache when nothing is)."""
        current = self._by_alias.get(alias)
        now = time.monotonic()
        if not force and now - self._checked.get(alias, -1e9) < self.refresh_seconds:
            return current
        self._checked[alias] = now
        try:
            raw = await self._client.get(self._keys.alias(alias))
        except (aredis.RedisError, OSError) as exc:
            if current is None:
                return await self._from_disk(alias, exc)
            return current
        version = raw.decode() if raw else None
        if version is None or (current is not None and current.version == version):
            return current
        async with self._lock:
            current = self._by_alias.get(alias)
            if current is not None and current.version == version:
                return current
            try:
                published = await asyncio.to_thread(self._store_factory().load, version)
                loaded = await asyncio.to_thread(LoadedModel.from_published, published)
            except Exception as exc:  # half-deleted version, Redis gone mid-load: keep serving what we have
                log.warning("could not load model version %s for alias %s: %s", version, alias, exc)
                return current
            self._by_alias[alias] = loaded  # the atomic swap
            _freeze_long_lived()
            log.info("serving model version %s (%s) for alias %s", loaded.version, loaded.algorithm, alias)
            try:
                await asyncio.to_thread(self._disk.save, alias, published)
            except OSError as exc:
                log.warning("could not cache model version %s on disk: %s", version, exc)
            return loaded

    async def _from_disk(self, alias: str, cause: Exception) -> LoadedModel | None:
        async with self._lock:
            if alias in self._by_alias:
                return self._by_alias[alias]
            published = await asyncio.to_thread(self._disk.load, alias)
            if published is None:
                return None
            log.warning("Redis unavailable (%s): serving cached model version %s for alias %s", cause, published.version, alias)
            loaded = await asyncio.to_thread(LoadedModel.from_published, published)
            self._by_alias[alias] = loaded
            _freeze_long_lived()
            return loaded
