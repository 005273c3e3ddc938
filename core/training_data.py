"""The table training reads: graded (user, item) pairs from every event source and interaction log."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.contracts.events import SIMULATED_SOURCE
from core.storage import read_frame
from core.tables import OfflineStore
from models.weighting import count_weights, graded_interactions

COLUMNS = ["user_id", "item_id", "score", "events", "timestamp", "positive", "weight"]


def log_interactions(logs: pd.DataFrame) -> pd.DataFrame:
    """Interaction-log rows as graded pairs: counts summed per pair then log1p-weighted, weights summed."""
    counts = logs[logs["kind"] == "count"].groupby(["user_id", "item_id"], sort=False).agg(
        score=("value", "sum"), events=("value", "size"), timestamp=("timestamp", "max")
    )
    counts["weight"] = count_weights(counts["score"].to_numpy())
    weights = logs[logs["kind"] != "count"].groupby(["user_id", "item_id"], sort=False).agg(
        score=("value", "sum"), events=("value", "size"), timestamp=("timestamp", "max")
    )
    weights["weight"] = weights["score"].astype(np.float32)
    out = pd.concat([counts, weights]).reset_index()
    out["positive"] = out["weight"] > 0
    return out[COLUMNS]


def build_interactions(store: OfflineStore) -> tuple[pd.DataFrame, dict[str, int]]:
    """Graded events plus every interaction log, one row per (user, item). Returns it and row counts
    per input (``simulated_left_out``: events of experiment simulations, which training never reads)."""
    parts, counts = [], {}
    durations = store.read_tracks().set_index("track_id")["duration_ms"] if store.tracks_path.exists() else None
    events = store.read_events()
    simulated = events["source"].eq(SIMULATED_SOURCE).to_numpy()  # experiment simulations are not listening to learn from
    events, counts["simulated_left_out"] = events[~simulated], int(simulated.sum())
    counts["events"] = len(events)
    if len(events):
        parts.append(graded_interactions(events, durations)[COLUMNS])
    for source in store.interaction_sources():
        logs = read_frame(store.interaction_source_path(source))
        counts[f"log_{source}"] = len(logs)
        parts.append(log_interactions(logs))
    if not parts:
        return pd.DataFrame(columns=COLUMNS), counts
    combined = pd.concat(parts, ignore_index=True)
    if len(parts) > 1:  # the same pair seen by several sources: add up the evidence
        combined = combined.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(
            score=("score", "sum"), events=("events", "sum"), timestamp=("timestamp", "max"), weight=("weight", "sum")
        )
        combined["positive"] = combined["weight"] > 0
    return combined[COLUMNS], counts
