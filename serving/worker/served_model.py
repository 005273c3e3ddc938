"""The model version the worker learns against: the fixed item side of the online fold-in."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.vectorstore import VectorStore
from models.foldin import FoldIn
from models.online_update import Recency


@dataclass
class ServedModel:
    """The model version whose user vectors the worker keeps current."""

    version: str
    index: dict[str, int]  # track id -> row of the fold-in matrix
    fold: FoldIn
    durations: pd.Series  # duration_ms by track id: plays are graded by how much of the track was heard
    trained_until_ms: int  # newest event the version learnt from: a re-fold replays only later ones
    catalog_revision: int = 0  # bumped when new tracks joined the version (core.vectorstore.VectorStore.extend)
    half_life_days: float | None = None  # the recency half-life the version was trained with (None: none)

    @property
    def recency(self) -> Recency:
        """How this version weighs an event by its time (as its training did)."""
        return Recency(self.trained_until_ms, self.half_life_days)


def load_served_model(store: VectorStore, version: str) -> ServedModel | None:
    """The published model ``version`` as the worker needs it, or None when it was published without a
    fold-in (no online learning for it)."""
    fold = store.fold_in(version)
    if fold is None:
        return None
    published = store.load(version)
    ids = published.items["track_id"].astype(str)
    durations = pd.Series(pd.to_numeric(published.items.get("duration_ms"), errors="coerce").to_numpy(), index=ids)
    half_life = float(published.meta.get("recency_half_life_days") or 0) or None  # versions published before it: none
    return ServedModel(
        version,
        {t: i for i, t in enumerate(ids)},
        FoldIn(*fold),
        durations,
        int(published.meta.get("trained_until", "0")),
        int(published.meta.get("catalog_revision", "0")),
        half_life,
    )
