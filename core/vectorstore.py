"""The online feature store in Redis: versioned item tables, item vectors and user vectors.

Writers (the publishing asset, the feedback worker) and readers (the API) go through this class, so
the key layout in :class:`~core.contracts.redis_keys.RedisKeys` is the only place keys are built.
A version is written completely before an alias is pointed at it; moving the alias is one SET, so
readers switch atomically and a rollback is moving it back.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from core.contracts.redis_keys import RedisKeys
from core.redis_clients import is_cluster, mget

_BATCH = 2_000
# most recent tracks kept in a user's played set: every recommendation reads the whole set, so it is
# bounded (and a client posting plays of every track in the catalog cannot make it grow)
PLAYED_CAP = 2_000


@dataclass
class PublishedVersion:
    version: str
    items: pd.DataFrame  # track_id, metadata columns, popularity
    item_vectors: np.ndarray  # float32 (n_items, d)
    meta: dict[str, str]
    similarity_vectors: np.ndarray | None = None  # float32 (n_items, k), unit rows; None: use item_vectors


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def track_ids_digest(track_ids: Iterable[str]) -> str:
    """An order-free fingerprint of a set of track ids: ``count:sum of their 64-bit hashes``, computed
    without sorting (pandas' fixed-key hash, the same in every process). Kept in a version's meta at
    publish and extend, so the new-catalog-tracks sensor tells "the catalog is what this version
    serves" from one Redis hash field instead of loading the version."""
    unique = pd.unique(
        pd.Series(list(track_ids) if isinstance(track_ids, set) else track_ids, dtype=object).astype(str)
    )
    hashes = pd.util.hash_array(np.asarray(unique, dtype=object))  # sums wrap modulo 2**64: order-free
    return f"{len(unique)}:{int(hashes.sum(dtype=np.uint64)):016x}"


class VectorStore:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.r = client
        self.keys = keys

    # --- writing a version ----------------------------------------------------------------
    def publish(
        self,
        version: str,
        items: pd.DataFrame,
        item_vectors: np.ndarray,
        user_ids: np.ndarray,
        user_vectors: np.ndarray,
        meta: Mapping[str, object],
        similarity_vectors: np.ndarray | None = None,
        fold_in: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, int]:
        """Write every artefact of ``version``. Does not move any alias. Returns counts and bytes."""
        if len(items) != len(item_vectors):
            raise ValueError(f"{len(items)} items but {len(item_vectors)} item vectors")
        if len(user_ids) != len(user_vectors):
            raise ValueError(f"{len(user_ids)} users but {len(user_vectors)} user vectors")
        items_blob, vectors_blob = _parquet_bytes(items), _npy_bytes(item_vectors)
        self.r.set(self.keys.model_items(version), items_blob)
        self.r.set(self.keys.model_item_vectors(version), vectors_blob)
        if similarity_vectors is not None:
            if len(similarity_vectors) != len(items):
                raise ValueError(f"{len(items)} items but {len(similarity_vectors)} similarity vectors")
            self.r.set(self.keys.model_similarity_vectors(version), _npy_bytes(similarity_vectors))
        if fold_in is not None:  # (matrix, tail): how the feedback worker updates user vectors online
            self.r.set(self.keys.model_fold_in(version), _npy_bytes(fold_in[0]))
            meta = {**meta, "fold_in_tail": ",".join(f"{x:.9g}" for x in fold_in[1])}
        user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        for start in range(0, len(user_ids), _BATCH):
            pipe = self.r.pipeline(transaction=False)
            for uid, vec in zip(user_ids[start : start + _BATCH], user_vectors[start : start + _BATCH]):
                pipe.set(self.keys.user_vector(version, str(uid)), vec.tobytes())
            pipe.execute()
        full_meta = {
            **{k: str(v) for k, v in meta.items()},
            "version": version,
            "dimensions": str(item_vectors.shape[1]),
            "items": str(len(items)),
            "track_ids_digest": track_ids_digest(items["track_id"]),
            "users": str(len(user_ids)),
            "published_at": str(time.time()),
        }
        self.r.hset(self.keys.model_meta(version), mapping=full_meta)
        self.r.zadd(self.keys.models_index(), {version: time.time()})
        return {
            "items": len(items),
            "users": len(user_ids),
            "bytes": len(items_blob) + len(vectors_blob) + user_vectors.nbytes,
        }

    def extend(
        self, version: str, items: pd.DataFrame, item_vectors: np.ndarray, similarity_vectors: np.ndarray | None
    ) -> int:
        """Append new items to a published ``version`` (new tracks placed by the model's cold-start map:
        the catalog grows between trainings). Item table, vectors, similarity vectors and fold-in
        (zero rows: an unplayed item moves no user vector, as in training) are replaced in one
        transaction with ``catalog_revision`` bumped, so readers load the old set or the new, and
        notice the change. User vectors are untouched. Returns the new item count."""
        current = self.load(version)
        if len(items) != len(item_vectors):
            raise ValueError(f"{len(items)} new items but {len(item_vectors)} vectors")
        merged_items = pd.concat([current.items, items.reindex(columns=current.items.columns)], ignore_index=True)
        vectors = np.vstack([current.item_vectors, np.asarray(item_vectors, dtype=np.float32)])
        fold = self.fold_in(version)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.model_items(version), _parquet_bytes(merged_items))
        pipe.set(self.keys.model_item_vectors(version), _npy_bytes(vectors))
        if current.similarity_vectors is not None and similarity_vectors is not None:
            pipe.set(
                self.keys.model_similarity_vectors(version),
                _npy_bytes(np.vstack([current.similarity_vectors, similarity_vectors])),
            )
        if fold is not None:
            zeros = np.zeros((len(items), fold[0].shape[1]), dtype=np.float32)
            pipe.set(self.keys.model_fold_in(version), _npy_bytes(np.vstack([fold[0], zeros])))
        pipe.hset(
            self.keys.model_meta(version),
            mapping={
                "items": str(len(merged_items)),
                "track_ids_digest": track_ids_digest(merged_items["track_id"]),
                "extended_at": str(time.time()),
            },
        )
        pipe.hincrby(self.keys.model_meta(version), "catalog_revision", 1)
        pipe.execute()
        return len(merged_items)

    def catalog_revision(self, version: str) -> int:
        """How many times ``version``'s catalog was extended since it was published."""
        return int(self.r.hget(self.keys.model_meta(version), "catalog_revision") or 0)

    def add_played(self, played: Mapping[str, Mapping[str, float]], cap: int = PLAYED_CAP) -> int:
        """Add tracks to users' played sets: user -> {track id: when played, epoch ms}. A union (plays
        recorded online are never dropped) that keeps each user's ``cap`` most recent tracks."""
        n = 0
        pipe = self.r.pipeline(transaction=False)
        for i, (uid, tracks) in enumerate(played.items(), start=1):
            if tracks:
                key = self.keys.user_played(uid)
                pipe.zadd(key, {t: float(when) for t, when in tracks.items()}, gt=True)
                pipe.zremrangebyrank(key, 0, -cap - 1)
                n += len(tracks)
            if i % _BATCH == 0:
                pipe.execute()
        pipe.execute()
        return n

    def set_alias(self, alias: str, version: str) -> str | None:
        """Point ``alias`` at a published ``version``; returns the version it pointed at before."""
        if not self.r.exists(self.keys.model_meta(version)):
            raise KeyError(f"model version {version} is not published in Redis")
        previous = self.r.set(self.keys.alias(alias), version, get=True)
        return previous.decode() if previous else None

    def remove_alias(self, alias: str) -> None:
        self.r.delete(self.keys.alias(alias))

    # --- reading --------------------------------------------------------------------------
    def alias(self, alias: str) -> str | None:
        value = self.r.get(self.keys.alias(alias))
        return value.decode() if value else None

    def aliases(self) -> dict[str, str]:
        """Every alias and the version it points at."""
        names = list(self.r.scan_iter(match=self.keys.alias("*"), count=1000))
        values = mget(self.r, names)
        prefix = len(self.keys.alias(""))
        return {n.decode()[prefix:]: v.decode() for n, v in zip(names, values) if v is not None}

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        return [v.decode() for v in self.r.zrange(self.keys.models_index(), 0, -1)]

    def meta(self, version: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.model_meta(version)).items()}

    def load(self, version: str) -> PublishedVersion:
        """Everything the API holds in memory for one version. The catalog revision is read before and
        after the blobs: an extension landing in between (:meth:`extend`) is read again, so the item
        table and the vectors always match. (No MULTI: a Redis at its memory cap refuses transactions,
        and serving must still load what is there.)"""
        keys = self.keys
        for _ in range(5):
            pipe = self.r.pipeline(transaction=False)
            pipe.hget(keys.model_meta(version), "catalog_revision")
            pipe.get(keys.model_items(version))
            pipe.get(keys.model_item_vectors(version))
            pipe.hgetall(keys.model_meta(version))
            pipe.get(keys.model_similarity_vectors(version))
            pipe.hget(keys.model_meta(version), "catalog_revision")
            before, items_blob, vectors_blob, meta, similarity_blob, after = pipe.execute()
            if before == after:
                break
        else:
            raise RuntimeError(f"model version {version}'s catalog kept changing while it was read")
        if items_blob is None or vectors_blob is None or not meta:
            raise KeyError(f"model version {version} is not (completely) published in Redis")
        items = pq.read_table(io.BytesIO(items_blob)).to_pandas()
        vectors = np.load(io.BytesIO(vectors_blob), allow_pickle=False)
        similarity = None if similarity_blob is None else np.load(io.BytesIO(similarity_blob), allow_pickle=False)
        return PublishedVersion(version, items, vectors, {k.decode(): v.decode() for k, v in meta.items()}, similarity)

    def track_ids(self, version: str) -> set[str]:
        """The track ids ``version`` serves: its item table's one column, without the vectors."""
        blob = self.r.get(self.keys.model_items(version))
        if blob is None:
            raise KeyError(f"model version {version} is not (completely) published in Redis")
        return set(pq.read_table(io.BytesIO(blob), columns=["track_id"]).column("track_id").to_pylist())

    def is_complete(self, version: str) -> bool:
        """Whether every artefact of ``version`` the API and the worker read is in Redis."""
        keys = self.keys
        found = self.r.exists(
            keys.model_meta(version),
            keys.model_items(version),
            keys.model_item_vectors(version),
            keys.model_fold_in(version),
        )
        return found == 4

    def fold_in(self, version: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The version's fold-in (matrix, tail), or None when it was published without one."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.model_fold_in(version))
        pipe.hget(self.keys.model_meta(version), "fold_in_tail")
        raw, tail = pipe.execute()
        if raw is None or tail is None:
            return None
        return np.load(io.BytesIO(raw), allow_pickle=False), np.array(tail.decode().split(","), dtype=np.float32)

    def user_vector(self, version: str, user_id: str) -> np.ndarray | None:
        raw = self.r.get(self.keys.user_vector(version, user_id))
        return None if raw is None else np.frombuffer(raw, dtype=np.float32)

    def played(self, user_id: str) -> set[str]:
        return {t.decode() for t in self.r.zrange(self.keys.user_played(user_id), 0, -1)}

    # --- housekeeping ---------------------------------------------------------------------
    def retag_versions(self) -> int:
        """Rename the artefacts of versions published before they carried the version's hash tag, so
        an install upgraded in place keeps serving them. Only on a single server (a cluster never held
        the old names, and RENAME cannot cross its slots). Returns the keys renamed."""
        if is_cluster(self.r):
            return 0
        renames = [pair for version in self.versions() for pair in self.keys.untagged_model_artefacts(version).items()]
        if not renames:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for old, _ in renames:
            pipe.exists(old)
        found = [pair for pair, exists in zip(renames, pipe.execute()) if exists]
        for old, new in found:
            pipe.renamenx(old, new)
        return sum(pipe.execute()) if found else 0

    def delete_version(self, version: str) -> int:
        """Remove a version's artefacts (refuses while an alias points at it). Returns keys deleted."""
        for alias, target in self.aliases().items():
            if target == version:
                raise ValueError(f"version {version} is still the target of alias {alias}")
        n = 0
        pattern = self.keys.user_vector(version, "*")  # braces are literal in Redis glob patterns
        for batch in _chunks(self.r.scan_iter(match=pattern, count=1000), 1000):
            n += self.r.delete(*batch)
        n += self.r.delete(
            self.keys.model_items(version),
            self.keys.model_item_vectors(version),
            self.keys.model_similarity_vectors(version),
            self.keys.model_fold_in(version),
            self.keys.model_meta(version),
        )
        self.r.zrem(self.keys.models_index(), version)
        return n


def _chunks(iterable: Iterable, size: int) -> Iterable[list]:
    batch: list = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
