"""Simulated experiment events (the demo's synthetic listeners answering served lists) stay out of the
next model's training data but still reach the experiment report (issue 21, item 9: they became
training data, so the next model learnt the simulator's answers to its predecessor's own lists)."""

import pandas as pd

from core.contracts.events import SIMULATED_SOURCE
from core.synthetic import SyntheticWorld
from core.tables import OfflineStore
from core.training_data import build_interactions


def test_training_leaves_out_simulated_events_and_the_event_log_keeps_them(tmp_path):
    world = SyntheticWorld.generate(200, 40, seed=3)
    store = OfflineStore(tmp_path / "tables")
    store.write_tracks(world.tracks)
    history = world.events(3_000, days=3)
    store.write_events(history, part="synthetic")
    before, counts = build_interactions(store)
    assert counts["simulated_left_out"] == 0 and counts["events"] == len(history)

    # the same listeners answering an experiment's lists: likes of tracks they never played before
    simulated = world.events(1_500, days=3).assign(
        source=SIMULATED_SOURCE, type="like", experiment_id="demo", variant="treatment"
    )
    simulated["event_id"] = [f"sim-{i}" for i in range(len(simulated))]
    store.write_events(simulated, part="simulation-demo")
    after, counts = build_interactions(store)
    assert counts["simulated_left_out"] == len(simulated) and counts["events"] == len(history)
    pd.testing.assert_frame_equal(
        after.sort_values(["user_id", "item_id"], ignore_index=True),
        before.sort_values(["user_id", "item_id"], ignore_index=True),
    )
    logged = store.read_events()  # what the experiment report reads
    assert (logged["source"] == SIMULATED_SOURCE).sum() == len(simulated)
