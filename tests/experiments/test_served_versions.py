"""served_versions: the one answer to "which model versions do running experiments serve", shared by
the worker (every arm learns online) and the release's retention (never retire one still served)."""

import json

import numpy as np
import pandas as pd

from core import release
from core.contracts import RedisKeys
from core.vectorstore import VectorStore
from experiments.store import served_versions


def _publish(store: VectorStore, version: str) -> None:
    items = pd.DataFrame({"track_id": ["t0", "t1"], "popularity": [1.0, 0.0]})
    store.publish(
        version,
        items,
        np.eye(2, 4, dtype=np.float32),
        np.array(["u1"]),
        np.ones((1, 4), dtype=np.float32),
        meta={"algorithm": "test"},
    )


def test_pinned_and_aliased_versions_of_running_experiments_only(redis_client, redis_prefix):
    keys = RedisKeys(redis_prefix)
    store = VectorStore(redis_client, keys)
    for version in ("1", "2", "3", "4", "5"):
        _publish(store, version)
    store.set_alias("challenger", "3")
    definitions = {
        "pinned": {
            "status": "running",
            "variants": [{"name": "a", "model_version": "2"}, {"name": "b", "algorithm": "popularity"}],
        },
        "aliased": {
            "status": "running",
            "variants": [{"name": "a", "model_alias": "challenger"}, {"name": "b", "model_version": "2"}],
        },
        "draft": {"status": "draft", "variants": [{"name": "a", "model_version": "4"}]},
        "unpublished": {"status": "running", "variants": [{"name": "a", "model_version": "9"}]},
    }
    redis_client.hset(
        keys.experiments(), mapping={k: json.dumps(v) for k, v in definitions.items()} | {"broken": "{not json"}
    )
    served = served_versions(redis_client, keys, store)
    assert sorted(served) == ["2", "3"] and len(served) == len(set(served))

    store.set_alias("champion", "5")
    deleted = release.retire(store, keep=1, protected=served)  # what the publishing asset does
    assert sorted(deleted) == ["1", "4"] and set(store.versions()) == {"2", "3", "5"}
