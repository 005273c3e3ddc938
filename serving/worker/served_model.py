"""The model version the worker learns against: the fixed item side of the online fold-in."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.vectorstore import VectorStore
from models.foldin import FoldIn


@dataclass
class ServedModel:
    """The model version whose user vectors the worker keeps current."""

    version: str
    index: dict[str, int]  # track id -> row of the fold-in matrix
    fold: FoldIn
    durations: pd.Series  # duration_ms by track id: plays are graded by how much of the track was heard
    trained_until_ms: int  # newest event the version learnt from: a re-fold replays only later ones
    catalog_revision: int = 0  # bumped when new tracks joined the version (core.vectorstore.VectorStore.extend)


def load_served_model(store: VectorStore, version: str) -> ServedModel | None:
    """The published model ``version`` as the worker needs it, or None when it was published without a
    fold-in (no online learning for it)."""
    fold = store.fold_in(version)
    if fold is None:
        return None
    published = store.load(version)
    ids = published.items["track_id"].astype(str)
    durations = pd.Series(pd.to_numeric(published.items.get("duration_ms"), errors="coerce").to_numpy(), index=ids)
    return ServedModel(version, {t: i for i, t in enumerate(ids)}, FoldIn(*fold), durations,
                       int(published.meta.get("trained_until", "0")), int(published.meta.get("catalog_revision", "0")))  # fmt: skip
