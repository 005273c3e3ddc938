"""The last loaded version of each alias on disk (``var/``, or shared storage when
``ECHOTUNE_STORAGE_URL`` is an object store), so an API that starts while Redis is down still answers
(degraded) from the last version it, or with shared storage any API host, saw."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from core.storage import StoragePath, as_location, write_atomic
from core.vectorstore import PublishedVersion


class DiskCache:
    """One file per alias (``<alias>.npz``: item table, vectors, similarity vectors, meta, and the
    version's ANN index when it has one: vectors and index are replaced together).

    Every writer writes a temporary file of its own and renames it over the alias's file (in object
    storage, one upload is all or nothing): API worker processes caching the same version at once each
    finish a whole file, and a reader sees one whole file or the other (regression: they shared one temporary folder and failed with
    "could not cache model version 1 on disk ... .champion.tmp/vectors.npy")."""

    def __init__(self, folder: StoragePath) -> None:
        self.folder = as_location(folder)

    def path(self, alias: str) -> StoragePath:
        return self.folder / f"{alias}.npz"

    def save(self, alias: str, published: PublishedVersion, ann_index: bytes | None = None) -> StoragePath:
        items = io.BytesIO()
        published.items.to_parquet(items)
        arrays = {
            "items": np.frombuffer(items.getvalue(), dtype=np.uint8),
            "vectors": np.asarray(published.item_vectors, dtype=np.float32),
            "meta": np.frombuffer(json.dumps(published.meta).encode(), dtype=np.uint8),
        }
        if published.similarity_vectors is not None:
            arrays["similarity"] = np.asarray(published.similarity_vectors, dtype=np.float32)
        if ann_index is not None:
            arrays["ann_index"] = np.frombuffer(ann_index, dtype=np.uint8)
        return write_atomic(self.path(alias), lambda handle: np.savez(handle, **arrays), fsync=False)

    def load(self, alias: str) -> PublishedVersion | None:
        path = self.path(alias)
        if not path.exists():
            return None
        with path.open("rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            items = pd.read_parquet(io.BytesIO(data["items"].tobytes()))
            similarity = data["similarity"] if "similarity" in data.files else None
            return PublishedVersion(meta["version"], items, data["vectors"], meta, similarity)

    def ann_index(self, alias: str, version: str) -> bytes | None:
        """The ANN index cached for ``alias`` if the cached file holds ``version`` and has one."""
        path = self.path(alias)
        if not path.exists():
            return None
        with (
            path.open("rb") as handle,
            np.load(handle, allow_pickle=False) as data,
        ):  # members are read on access: the vectors are not
            if "ann_index" not in data.files or json.loads(data["meta"].tobytes()).get("version") != version:
                return None
            return data["ann_index"].tobytes()
