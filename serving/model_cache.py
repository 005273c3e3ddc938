"""Loaded model versions by alias, kept current.

:class:`ModelCache` follows Redis aliases (``champion``, and any alias or version an experiment names):
when an alias moves, the new version is loaded completely in a thread and then swapped in with one
reference assignment, so a request sees the old version or the new one, never a mix. Each loaded
version is also written to the :class:`~serving.disk_cache.DiskCache`.

A catalog of at least ``ann_min_tracks`` tracks is served through its version's ANN index, attached
before the swap: from the disk cache when it holds that version, else the one logged to MLflow at
release (``index_source``). A version without one (released before indexes were) is swapped in
exact and its index built once in a thread, then attached (vectors and index of the same version).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

import redis.asyncio as aredis

from core.contracts.redis_keys import RedisKeys
from core.settings import Settings
from core.vectorstore import PublishedVersion
from models.ann import CatalogIndex, UnknownIndexFormat
from serving.disk_cache import DiskCache
from serving.loaded_model import LoadedModel

log = logging.getLogger(__name__)


# below this many tracks the catalog is left to the collector: walking it costs ~1.3 ms per 1,000 tracks
# (63 ms at 50,000), while thawing and collecting the whole process costs 0.08 s in an API process and
# 0.3 s or more in one that imported the pipelines too (the test suite: ~100 API starts)
FREEZE_MIN_TRACKS = 10_000
_froze = False  # whether the last call froze the heap: only then is there a catalog of ours to thaw


def _freeze_long_lived(largest_catalog: int) -> None:
    """Move what is alive now (the loaded catalog: ~100k lists of artists and genres) out of the
    garbage collector's reach. A full collection otherwise walks all of it, a 60 ms pause for every
    request in flight (measured on a 50,000-track catalog); frozen, it costs nothing. Each call
    thaws and collects first, so a replaced model is freed even if pandas left cycles in it, and
    nothing dead stays frozen: one such pause per model swap instead of one every few seconds.
    ``largest_catalog``: tracks of the largest model held now; under FREEZE_MIN_TRACKS nothing is
    frozen (and what this function froze for an earlier, larger model is thawed and collected)."""
    global _froze
    if largest_catalog < FREEZE_MIN_TRACKS and not _froze:
        return
    gc.unfreeze()
    gc.collect()
    _froze = largest_catalog >= FREEZE_MIN_TRACKS
    if _froze:
        gc.freeze()


class ModelCache:
    """Loaded versions by alias. ``refresh`` checks the alias in Redis at most every
    ``refresh_seconds`` (one GET) and reloads only when it moved."""

    def __init__(
        self,
        client: aredis.Redis,
        keys: RedisKeys,
        store_factory,
        disk: DiskCache,
        refresh_seconds: float = 2.0,
        ann_min_tracks: int | None = None,
        index_source: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._store_factory = store_factory  # () -> VectorStore on a sync client: loading runs in a thread
        self._disk = disk
        self.refresh_seconds = refresh_seconds
        self._by_alias: dict[str, LoadedModel] = {}
        self._checked: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.ann_min_tracks = ann_min_tracks  # None: never an ANN index
        self._index_source = index_source  # version -> the index bytes logged at release, or None
        self._building: dict[tuple[str, str], asyncio.Task] = {}  # (alias, version) -> its index being built

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
                loaded = await asyncio.to_thread(self._loaded, key, published, None)
                self._by_alias[key] = loaded
                self._freeze()
                self._index_later(key, loaded)
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
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._keys.alias(alias))
                # a catalog extended with new tracks since it was loaded (same version, more items)
                if current is not None:
                    pipe.hget(self._keys.model_meta(current.version), "catalog_revision")
                raw, *revision = await pipe.execute()
            revision = revision[0] if revision else None
        except (aredis.RedisError, OSError) as exc:
            if current is None:
                return await self._from_disk(alias, exc)
            return current
        version = raw.decode() if raw else None
        if version is None or (
            current is not None and current.version == version and _revision(current) == _decode(revision)
        ):
            return current
        async with self._lock:
            current = self._by_alias.get(alias)
            if current is not None and current.version == version and _revision(current) == _decode(revision):
                return current
            try:
                published = await asyncio.to_thread(self._store_factory().load, version)
                loaded = await asyncio.to_thread(self._loaded, alias, published, current)
            except Exception as exc:  # half-deleted version, Redis gone mid-load: keep serving what we have
                log.warning("could not load model version %s for alias %s: %s", version, alias, exc)
                return current
            self._by_alias[alias] = loaded  # the atomic swap
            self._freeze()
            log.info("serving model version %s (%s) for alias %s", loaded.version, loaded.algorithm, alias)
            await self._cache_on_disk(alias, published, loaded)
            self._index_later(alias, loaded, published)
            return loaded

    async def _from_disk(self, alias: str, cause: Exception) -> LoadedModel | None:
        async with self._lock:
            if alias in self._by_alias:
                return self._by_alias[alias]
            published = await asyncio.to_thread(self._disk.load, alias)
            if published is None:
                return None
            log.warning(
                "Redis unavailable (%s): serving cached model version %s for alias %s", cause, published.version, alias
            )
            loaded = await asyncio.to_thread(self._loaded, alias, published, None)
            self._by_alias[alias] = loaded
            self._freeze()
            self._index_later(alias, loaded)
            return loaded

    async def indexed(self) -> None:
        """Wait for the index builds under way (tests and benchmarks that measure the indexed API)."""
        await asyncio.gather(*self._building.values())

    def _freeze(self) -> None:
        _freeze_long_lived(max((model.n_items for model in self._by_alias.values()), default=0))

    def _wants_index(self, model: LoadedModel) -> bool:
        return self.ann_min_tracks is not None and model.n_items >= self.ann_min_tracks

    def _loaded(self, alias: str, published: PublishedVersion, current: LoadedModel | None) -> LoadedModel:
        """``published`` loaded, with its ANN index attached when the catalog is large enough and one is
        at hand: the current one (the same version, extended since), the disk cache's, or MLflow's."""
        loaded = LoadedModel.from_published(published)
        if not self._wants_index(loaded):
            return loaded
        if current is not None and current.version == loaded.version and current.ann is not None:
            loaded.attach_index(current.ann)
            return loaded
        data = self._disk.ann_index(alias, loaded.version)
        if data is None and self._index_source is not None:
            try:
                data = self._index_source(loaded.version)
            except Exception as exc:  # MLflow unreachable: build it here instead
                log.warning("could not fetch the ANN index of model version %s: %s", loaded.version, exc)
        if data is not None:
            try:
                loaded.attach_index(CatalogIndex.from_bytes(data))
            except UnknownIndexFormat as exc:  # logged by an older release: built here instead
                log.warning("ANN index of model version %s not loaded: %s", loaded.version, exc)
        return loaded

    def _index_later(self, alias: str, loaded: LoadedModel, published: PublishedVersion | None = None) -> None:
        """A large catalog served without an index gets one built in a thread (once per alias and
        version), then attached; the meantime is served exact."""
        key = (alias, loaded.version)
        if not self._wants_index(loaded) or loaded.ann is not None or key in self._building:
            return

        async def build() -> None:
            try:
                started = time.perf_counter()
                index = await asyncio.to_thread(CatalogIndex.build, loaded.vectors, loaded.similarity, loaded.content)
                loaded.attach_index(index)
                log.info(
                    "built the ANN index of model version %s (%d tracks) in %.1f s",
                    loaded.version,
                    loaded.n_items,
                    time.perf_counter() - started,
                )
                if published is not None:
                    await self._cache_on_disk(alias, published, loaded)
            except Exception as exc:
                log.warning(
                    "could not build the ANN index of model version %s: %s (serving exact)", loaded.version, exc
                )
            finally:
                self._building.pop(key, None)

        self._building[key] = asyncio.create_task(build())

    async def _cache_on_disk(self, alias: str, published: PublishedVersion, loaded: LoadedModel) -> None:
        def save() -> None:
            self._disk.save(alias, published, loaded.ann.to_bytes() if loaded.ann is not None else None)

        try:
            await asyncio.to_thread(save)
        except Exception as exc:  # a full disk or an unreachable object store: the cache is a spare, serving goes on
            log.warning("could not cache model version %s on disk: %s", loaded.version, exc)


def released_index(settings: Settings, version: str) -> bytes | None:
    """The ANN index logged to MLflow with ``version`` at release (see :func:`core.release.index_version`).
    MLflow is imported here, on first use: an API that never serves a large catalog does not carry it
    (about 100 MB per process)."""
    from core.model_registry import ModelRegistry

    return ModelRegistry.from_settings(settings).ann_index(version)


def _revision(model: LoadedModel) -> str:
    return model.meta.get("catalog_revision", "0")


def _decode(raw: bytes | None) -> str:
    return raw.decode() if raw else "0"
