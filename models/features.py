"""Item features for hybrid and content-based models: genres, binned audio features, decade, tags.

Bins are fixed (not fitted to a catalog) so a track that arrives after training maps to the same
features. A track with no audio features simply has fewer active features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

# audio feature -> bin edges (right-open); values outside the first/last edge fall in the end bins
AUDIO_BINS: dict[str, tuple[float, ...]] = {
    "danceability": (0.2, 0.4, 0.6, 0.8),
    "energy": (0.2, 0.4, 0.6, 0.8),
    "acousticness": (0.1, 0.3, 0.6, 0.85),
    "instrumentalness": (0.01, 0.1, 0.5, 0.85),
    "valence": (0.2, 0.4, 0.6, 0.8),
    "speechiness": (0.05, 0.1, 0.2, 0.35),
    "liveness": (0.15, 0.3, 0.6),
    "tempo": (80.0, 100.0, 120.0, 140.0),
    "loudness": (-20.0, -12.0, -8.0, -5.0),
}
# continuous audio features scaled to [0, 1], for content similarity
CONTENT_SCALE: dict[str, tuple[float, float]] = {
    "danceability": (0.0, 1.0),
    "energy": (0.0, 1.0),
    "acousticness": (0.0, 1.0),
    "instrumentalness": (0.0, 1.0),
    "valence": (0.0, 1.0),
    "speechiness": (0.0, 1.0),
    "liveness": (0.0, 1.0),
    "tempo": (40.0, 220.0),
    "loudness": (-40.0, 0.0),
}


@dataclass
class ItemFeatures:
    """Sparse items x features matrix, rows aligned with ``item_ids``."""

    item_ids: np.ndarray
    matrix: sp.csr_matrix
    names: np.ndarray

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    @classmethod
    def from_pairs(cls, item_ids: np.ndarray, pairs: pd.DataFrame) -> ItemFeatures:
        """From a long table with columns item_id, feature, weight (tags, genres, anything)."""
        item_ids = np.asarray(item_ids, dtype=str)
        rows = pd.Index(item_ids).get_indexer(pairs["item_id"].astype(str))
        keep = rows >= 0
        names, cols = np.unique(pairs["feature"].astype(str).to_numpy()[keep], return_inverse=True)
        weights = (
            pairs["weight"].to_numpy(dtype=np.float32)[keep] if "weight" in pairs else np.ones(len(cols), np.float32)
        )
        matrix = sp.csr_matrix((weights, (rows[keep], cols)), shape=(len(item_ids), len(names)), dtype=np.float32)
        matrix.sum_duplicates()
        return cls(item_ids=item_ids, matrix=matrix, names=names)

    def align(self, item_ids: np.ndarray) -> ItemFeatures:
        """Rows reordered to ``item_ids``; unknown items get an empty row."""
        idx = pd.Index(self.item_ids).get_indexer(np.asarray(item_ids, dtype=str))
        picker = sp.csr_matrix(
            (np.ones((idx >= 0).sum(), np.float32), (np.flatnonzero(idx >= 0), idx[idx >= 0])),
            shape=(len(item_ids), len(self.item_ids)),
        )
        return ItemFeatures(
            item_ids=np.asarray(item_ids, dtype=str), matrix=(picker @ self.matrix).tocsr(), names=self.names
        )

    def normalized(self) -> sp.csr_matrix:
        """Rows scaled to sum 1 (what LightFM expects of feature weights)."""
        sums = np.asarray(self.matrix.sum(axis=1)).ravel()
        return sp.diags(1.0 / np.where(sums > 0, sums, 1.0)).astype(np.float32) @ self.matrix


def _track_feature_groups(tracks: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per kind of feature: (catalog row of each entry, code of each entry, name of each code). Artists,
    genres, binned audio features, explicit and decade; codes and not strings, so a catalog of a million
    tracks takes seconds."""
    groups = []

    def listed(column: str, prefix: str) -> None:
        values = pd.Series(tracks[column].to_numpy(), dtype=object).explode().dropna()
        codes, names = pd.factorize(values.astype(str).to_numpy())
        groups.append((values.index.to_numpy(dtype=np.int64), codes, np.asarray(prefix + names.astype(str), dtype=str)))

    if "artist_ids" in tracks:  # tracks of one artist share listeners: the strongest content signal
        listed("artist_ids", "artist:")
    if "genres" in tracks:
        listed("genres", "genre:")
    for col, edges in AUDIO_BINS.items():
        if col not in tracks:
            continue
        values = pd.to_numeric(tracks[col], errors="coerce").to_numpy()
        known = np.flatnonzero(~np.isnan(values.astype(np.float64)))
        groups.append(
            (known, np.digitize(values[known], edges), np.array([f"{col}:{b}" for b in range(len(edges) + 1)]))
        )
    if "explicit" in tracks:
        e = tracks["explicit"].reset_index(drop=True).dropna()
        groups.append(
            (
                e.index.to_numpy(dtype=np.int64),
                e.astype(bool).to_numpy().astype(np.int64),
                np.array(["clean", "explicit"]),
            )
        )
    if "release_year" in tracks:
        y = pd.to_numeric(tracks["release_year"].reset_index(drop=True), errors="coerce").dropna()
        codes, decades = pd.factorize((y // 10 * 10).astype(int).to_numpy())
        groups.append((y.index.to_numpy(dtype=np.int64), codes, np.array([f"decade:{d}" for d in decades], dtype=str)))
    return groups


def track_feature_pairs(tracks: pd.DataFrame) -> pd.DataFrame:
    """Long (item_id, feature, weight) table of artists, genres, binned audio features, explicit and decade."""
    ids = tracks["track_id"].astype(str).to_numpy()
    parts = [
        pd.DataFrame({"item_id": ids[rows], "feature": names[codes]})
        for rows, codes, names in _track_feature_groups(tracks)
    ]
    pairs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["item_id", "feature"])
    pairs["weight"] = 1.0
    return pairs


def track_features(tracks: pd.DataFrame, item_ids: np.ndarray | None = None) -> ItemFeatures:
    """Item features of catalog tracks (rows in ``item_ids`` order, default the catalog's order); the
    same matrix as ``ItemFeatures.from_pairs(item_ids, track_feature_pairs(tracks))``."""
    ids = tracks["track_id"].astype(str).to_numpy()
    item_ids = np.asarray(ids if item_ids is None else item_ids, dtype=str)
    row_of_track = pd.Index(item_ids).get_indexer(ids)
    groups = _track_feature_groups(tracks)
    rows = [row_of_track[r] for r, _, _ in groups]
    names = np.concatenate([np.zeros(0, dtype=str), *(n for _, _, n in groups)])
    first = np.cumsum([0, *(len(n) for _, _, n in groups)])
    cols = np.concatenate([np.zeros(0, dtype=np.int64), *(c + first[i] for i, (_, c, _) in enumerate(groups))])
    rows = np.concatenate([np.zeros(0, dtype=np.int64), *rows])
    keep = rows >= 0
    used, cols = np.unique(cols[keep], return_inverse=True)  # only features of the items asked for, by name
    by_name = np.argsort(names[used], kind="stable")
    rank = np.empty(len(used), dtype=np.int64)
    rank[by_name] = np.arange(len(used))
    matrix = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (rows[keep], rank[cols])), shape=(len(item_ids), len(used)), dtype=np.float32
    )
    matrix.sum_duplicates()
    return ItemFeatures(item_ids=item_ids, matrix=matrix, names=names[used][by_name])


CONTINUOUS_FEATURES: tuple[str, ...] = tuple(CONTENT_SCALE)
# a shared genre counts about as much as a close sound in content similarity
GENRE_WEIGHT = 0.5


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as float32."""
    return (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def content_vectors(audio: dict[str, np.ndarray], genres: Sequence[Sequence[str] | None]) -> np.ndarray:
    """Unit content vectors of a catalog for cold start and content similarity: each continuous audio
    feature standardised over the catalog, plus one indicator column per genre weighted by
    ``GENRE_WEIGHT``·sqrt(#features). ``audio`` maps each of ``CONTINUOUS_FEATURES`` to a float array
    (NaN where unknown; a missing feature counts as unknown everywhere); ``genres`` holds each track's
    genre list or None. A track without audio features sits at the catalog mean, so its genres alone
    place it. Returns float32 (n_tracks, n_features + n_genres)."""
    n = len(genres)
    dense = np.stack(
        [np.asarray(audio.get(f, np.full(n, np.nan)), dtype=np.float64) for f in CONTINUOUS_FEATURES], axis=1
    )
    with warnings.catch_warnings():  # a feature no track has: its mean is NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(dense, axis=0), np.nanstd(dense, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 0, std, 1.0)
    dense = np.nan_to_num((dense - mean) / std)
    names = sorted({g for gs in genres if gs is not None for g in gs})
    column = {g: i for i, g in enumerate(names)}
    onehot = np.zeros((n, len(names)), dtype=np.float64)
    for row, gs in enumerate(genres):
        if gs is not None:
            for g in gs:
                onehot[row, column[g]] = 1.0
    return unit_rows(np.hstack([dense, onehot * (GENRE_WEIGHT * np.sqrt(len(CONTINUOUS_FEATURES)))]))


def catalog_audio(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each of ``CONTINUOUS_FEATURES`` of an item table as float32 (NaN where unknown or missing)."""
    n = len(items)
    return {
        f: pd.to_numeric(items[f], errors="coerce").to_numpy(dtype=np.float32)
        if f in items
        else np.full(n, np.nan, np.float32)
        for f in CONTINUOUS_FEATURES
    }


def catalog_content(items: pd.DataFrame, audio: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The unit content vectors of a published item table (what the API holds and the release indexes):
    :func:`content_vectors` of its audio features (``audio`` when already read) and genres."""
    genres = items["genres"] if "genres" in items else pd.Series([None] * len(items))
    return content_vectors(catalog_audio(items) if audio is None else audio, list(genres))
