"""Loaded model versions by alias, kept current.

:class:`ModelCache` follows Redis aliases (``champion``, and any alias or version an experiment names):
when an alias moves, the new version is loaded completely in a thread and then swapped in with one
reference assignment, so a request sees the old version or the new one, never a mix. Each loaded
version is also written to the :class:`~serving.disk_cache.DiskCache`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import redis.asyncio as aredis

from core.contracts.redis_keys import RedisKeys
from serving.disk_cache import DiskCache
from serving.loaded_model import LoadedModel

log = logging.getLogger(__name__)


def _freeze_long_lived() -> None:
    """Move what is alive now (the loaded catalog: ~100k lists of artists and genres) out of the
    garbage collector's reach. A full collection otherwise walks all of it, a 60 ms pause for every
    request in flight (measured on a 50,000-track catalog); frozen, it costs nothing. Each call
    thaws and collects first, so a replaced model is freed even if pandas left cycles in it, and
    nothing dead stays frozen: one such pause per model swap instead of one every few seconds."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


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
        if version is None or (current is not None and current.version == version and _revision(current) == _decode(revision)):
            return current
        async with self._lock:
            current = self._by_alias.get(alias)
            if current is not None and current.version == version and _revision(current) == _decode(revision):
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
            except Exception as exc:  # a full disk or an unreachable object store: the cache is a spare, serving goes on
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


def _revision(model: LoadedModel) -> str:
    return model.meta.get("catalog_revision", "0")


def _decode(raw: bytes | None) -> str:
    return raw.decode() if raw else "0"
