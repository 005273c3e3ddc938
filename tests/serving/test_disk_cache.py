"""The on-disk copy of the last loaded version of each alias."""

import threading

import numpy as np
import pandas as pd

from core.vectorstore import PublishedVersion
from serving.disk_cache import DiskCache


def _version(n: int) -> PublishedVersion:
    items = pd.DataFrame({"track_id": [f"t{i}" for i in range(50)], "genres": [["rock"]] * 50})
    return PublishedVersion(str(n), items, np.full((50, 8), n, np.float32), {"version": str(n), "algorithm": "x"}, None)


def test_round_trip(tmp_path):
    cache = DiskCache(tmp_path)
    assert cache.load("champion") is None
    cache.save("champion", _version(3))
    loaded = cache.load("champion")
    assert loaded.version == "3" and loaded.similarity_vectors is None and list(loaded.items["genres"][0]) == ["rock"]
    np.testing.assert_array_equal(loaded.item_vectors, np.full((50, 8), 3, np.float32))


def test_writers_racing_on_one_alias_each_leave_a_whole_file(tmp_path):
    """Regression: API worker processes caching the same version shared one temporary folder and
    failed with "could not cache model version 1 on disk ... .champion.tmp/vectors.npy"."""
    cache, errors = DiskCache(tmp_path), []

    def write(n: int) -> None:
        try:
            for _ in range(20):
                cache.save("champion", _version(n))
        except Exception as exc:  # noqa: BLE001 (any failure is the bug)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = cache.load("champion")
    assert (loaded.item_vectors == float(loaded.version)).all()  # one writer's whole file, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["champion.npz"]  # no temporary files left
