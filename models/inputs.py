"""Interaction and item-feature tables from CSV or Parquet files, checked and shaped the way
training wants them. Errors name the file and the column that is wrong."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from models.features import ItemFeatures, track_features
from models.weighting import raw_count_evidence, table_weights


class RawCountsWarning(UserWarning):
    """A ``weight`` column that looks like raw listen counts (see :func:`models.weighting.raw_count_evidence`)."""


ID_COLUMNS = ("user_id", "item_id", "track_id")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.tsv``, ``.txt``) or Parquet (``.parquet``, ``.pq``) file; id columns as strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        frame = pd.read_parquet(path)
    elif suffix in {".csv", ".tsv", ".txt"}:
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={c: str for c in ID_COLUMNS})
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")
    for column in ID_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype(str)
    return frame


def interactions_frame(path: str | Path) -> pd.DataFrame:
    """Long table (user_id, item_id, weight[, timestamp]) of positive interactions.

    Accepts ``item_id`` or ``track_id``, and ``weight`` (graded, used as is) or ``count`` (listen
    counts, turned into log1p weights by :mod:`models.weighting`).
    """
    frame = read_table(path)
    if "user_id" not in frame:
        raise ValueError(f"{path}: missing column 'user_id' (columns: {', '.join(map(str, frame.columns))})")
    item_column = "item_id" if "item_id" in frame else "track_id" if "track_id" in frame else None
    if item_column is None:
        raise ValueError(
            f"{path}: missing column 'item_id' or 'track_id' (columns: {', '.join(map(str, frame.columns))})"
        )
    try:
        weights = table_weights(frame)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    evidence = raw_count_evidence(weights) if "weight" in frame else None
    if evidence:
        warnings.warn(
            f"{path}: column 'weight' {evidence}: these look like raw listen counts, which training takes as "
            "final weights. Name the column 'count' to have them graded (log1p), or give weights already graded.",
            RawCountsWarning,
            stacklevel=2,
        )
    if not np.isfinite(weights).all():
        bad = "weight" if "weight" in frame else "count"
        raise ValueError(f"{path}: column {bad!r} has missing or non-numeric values")
    out = pd.DataFrame({"user_id": frame["user_id"], "item_id": frame[item_column], "weight": weights})
    if "timestamp" in frame:
        out["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="raise")
    return out[out["weight"] > 0].reset_index(drop=True)


def item_features_from_file(path: str | Path, item_ids: np.ndarray) -> ItemFeatures:
    """Item features aligned to ``item_ids``, from either a long table (``item_id`` or ``track_id``,
    ``feature``, optional ``weight``) or a track table (``track_id`` plus genres, artist ids and audio
    feature columns, see :func:`models.features.track_features`)."""
    frame = read_table(path)
    if "feature" in frame:
        item_column = "item_id" if "item_id" in frame else "track_id" if "track_id" in frame else None
        if item_column is None:
            raise ValueError(f"{path}: a feature table needs an 'item_id' or 'track_id' column")
        pairs = frame.rename(columns={item_column: "item_id"})
        return ItemFeatures.from_pairs(item_ids, pairs)
    if "track_id" not in frame:
        raise ValueError(
            f"{path}: item features need either a 'feature' column (long table) or a 'track_id' column (track table)"
        )
    return track_features(frame, item_ids)
