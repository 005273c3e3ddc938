"""The table training reads: graded (user, item) pairs from every event source and interaction log."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.contracts.events import SIMULATED_SOURCE
from core.storage import read_frame
from core.tables import OfflineStore
from models.weighting import (
    count_weights,
    fading_weights,
    graded_interactions,
    positive_log1p,
    recency_decay,
    timestamps_ms,
)

COLUMNS = ["user_id", "item_id", "score", "events", "timestamp", "positive", "weight"]


def log_interactions(
    logs: pd.DataFrame, half_life_days: float | None = None, reference_ms: float | None = None
) -> pd.DataFrame:
    """Interaction-log rows as graded pairs: counts summed per pair then log1p-weighted, weights summed.
    With ``half_life_days``, each row's share of its pair's weight fades with its age against
    ``reference_ms`` (:func:`models.weighting.fading_weights`; rows without a time do not fade)."""
    parts = []
    for counts, grade in ((True, positive_log1p), (False, _as_is)):
        rows = logs[(logs["kind"] == "count") == counts]
        groups = rows.groupby(["user_id", "item_id"], sort=False)
        pairs = groups.agg(score=("value", "sum"), events=("value", "size"), timestamp=("timestamp", "max"))
        if half_life_days:
            when = timestamps_ms(rows["timestamp"])
            reference = reference_ms if reference_ms is not None else np.nanmax(np.r_[when, 0.0])
            pairs["weight"] = fading_weights(
                groups.ngroup().to_numpy(),
                rows["value"].to_numpy(),
                when,
                grade,
                recency_decay(when, reference, half_life_days),
            )
        else:
            pairs["weight"] = count_weights(pairs["score"].to_numpy()) if counts else pairs["score"]
        parts.append(pairs.astype({"weight": np.float32}))
    out = pd.concat(parts).reset_index()
    out["positive"] = out["weight"] > 0
    return out[COLUMNS]


def _as_is(total: np.ndarray) -> np.ndarray:
    return total


def newest_ms(*tables: pd.DataFrame) -> float | None:
    """The newest ``timestamp`` of the tables, in epoch ms (None when none has one): the reference
    time recency is measured against, so weights depend on the data, not on when training runs."""
    newest = [
        np.nanmax(when)
        for table in tables
        if len(table) and "timestamp" in table and np.isfinite(when := timestamps_ms(table["timestamp"])).any()
    ]
    return max(newest) if newest else None


def build_interactions(store: OfflineStore, half_life_days: float | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Graded events plus every interaction log, one row per (user, item), recent ones weighing more
    with ``half_life_days`` (None or 0: every age alike). Returns it and row counts per input
    (``simulated_left_out``: events of experiment simulations, which training never reads)."""
    counts = {}
    durations = store.read_tracks().set_index("track_id")["duration_ms"] if store.tracks_path.exists() else None
    events = store.read_events()
    simulated = (
        events["source"].eq(SIMULATED_SOURCE).to_numpy()
    )  # experiment simulations are not listening to learn from
    events, counts["simulated_left_out"] = events[~simulated], int(simulated.sum())
    counts["events"] = len(events)
    logs = {source: read_frame(store.interaction_source_path(source)) for source in store.interaction_sources()}
    reference = newest_ms(events, *logs.values()) if half_life_days else None
    parts = [graded_interactions(events, durations, half_life_days, reference)[COLUMNS]] if len(events) else []
    for source, rows in logs.items():
        counts[f"log_{source}"] = len(rows)
        parts.append(log_interactions(rows, half_life_days, reference))
    if not parts:
        return pd.DataFrame(columns=COLUMNS), counts
    combined = pd.concat(parts, ignore_index=True)
    if len(parts) > 1:  # the same pair seen by several sources: add up the evidence
        combined = combined.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(
            score=("score", "sum"), events=("events", "sum"), timestamp=("timestamp", "max"), weight=("weight", "sum")
        )
        combined["positive"] = combined["weight"] > 0
    return combined[COLUMNS], counts
