import numpy as np
import pandas as pd

from core.contracts.events import EVENT_SCHEMA
from core.contracts.tracks import TRACK_SCHEMA
from core.synthetic import SyntheticWorld


def test_world_is_deterministic_and_in_contract_schemas():
    a = SyntheticWorld.generate(200, 30, seed=3)
    b = SyntheticWorld.generate(200, 30, seed=3)
    pd.testing.assert_frame_equal(a.tracks, b.tracks)
    assert list(a.tracks.columns) == TRACK_SCHEMA.names
    assert a.tracks["track_id"].str.fullmatch(r"[0-9A-Za-z]{22}").all()
    events = a.events(3000, days=4)
    assert list(events.columns) == EVENT_SCHEMA.names
    pd.testing.assert_frame_equal(events, b.events(3000, days=4))
    assert abs(len(events) - 3000) < 300
    assert events["event_id"].is_unique
    assert set(events["type"]) >= {"recommendation_shown", "track_completed", "track_skipped"}


def test_listening_follows_taste():
    world = SyntheticWorld.generate(400, 60, seed=5)
    events = world.events(12_000, days=3)
    index = {t: i for i, t in enumerate(world.tracks["track_id"])}
    users = {u: i for i, u in enumerate(world.user_ids)}
    streams = events[events["type"].isin(["track_completed", "track_skipped"])]
    aff = np.array([world.affinity(np.array([users[u]]), np.array([index[t]]))[0, 0] for u, t in zip(streams["user_id"], streams["track_id"])])
    completed = (streams["type"] == "track_completed").to_numpy()
    # users finish tracks they like and skip ones they do not
    assert aff[completed].mean() > aff[~completed].mean() + 0.2
    # and they listen to tracks they like far more than to random ones (affinity is ~N(0,1) per user)
    assert aff.mean() > 1.0
