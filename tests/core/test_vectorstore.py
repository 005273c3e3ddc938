"""The vector store's fingerprint of the track ids a version serves (issue 25: the new-catalog-tracks
sensor compares it with the catalog instead of loading the version on every tick)."""

import numpy as np
import pandas as pd

from core.contracts import RedisKeys
from core.vectorstore import VectorStore, track_ids_digest

IDS = [f"{i:022d}" for i in range(1000)]


def test_track_ids_digest_is_order_free_and_changes_with_the_set():
    digest = track_ids_digest(IDS)
    assert track_ids_digest(list(reversed(IDS))) == digest == track_ids_digest(IDS + IDS[:10])
    assert track_ids_digest(pd.Series(IDS)) == track_ids_digest(set(IDS)) == digest
    assert track_ids_digest(IDS[:-1]) != digest and track_ids_digest(IDS[:-1] + ["x" * 22]) != digest
    assert digest.startswith("1000:")


def test_publish_and_extend_keep_the_digest_of_what_is_served(redis_client, redis_prefix):
    store = VectorStore(redis_client, RedisKeys(redis_prefix))
    store.publish(
        "1", pd.DataFrame({"track_id": IDS[:5]}), np.zeros((5, 4)), np.array(["u"]), np.zeros((1, 4)), {"x": 1}
    )
    assert store.meta("1")["track_ids_digest"] == track_ids_digest(IDS[:5])
    store.extend("1", pd.DataFrame({"track_id": IDS[5:7]}), np.ones((2, 4), np.float32), None)
    assert store.meta("1")["track_ids_digest"] == track_ids_digest(IDS[:7])
    assert store.track_ids("1") == set(IDS[:7])
