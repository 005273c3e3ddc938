"""Train/test splits. Test interactions never appear in the train matrix; both share one id space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.interactions import Interactions


@dataclass
class Split:
    train: Interactions
    test: Interactions
    # items the test is restricted to (cold-start split), else None
    candidate_items: np.ndarray | None = None
    name: str = "random"

    @property
    def test_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.test.matrix.indptr) > 0)


def random_holdout(interactions: Interactions, test_share: float = 0.2, min_items: int = 5, seed: int = 42) -> Split:
    """Per user with at least ``min_items`` items, a seeded random ``test_share`` of them is held out."""
    rng = np.random.default_rng(seed)
    m = interactions.matrix.tocsr()
    m.sort_indices()
    test_mask = np.zeros(m.nnz, dtype=bool)
    for u in range(m.shape[0]):
        start, end = m.indptr[u], m.indptr[u + 1]
        n = end - start
        if n < min_items:
            continue
        n_test = max(1, int(round(test_share * n)))
        test_mask[start + rng.choice(n, size=n_test, replace=False)] = True
    return _split_by_mask(interactions, m, test_mask, name="random")


def time_split(interactions: Interactions, last_seen: sp.csr_matrix, cutoff: float) -> Split:
    """Pairs whose last interaction time (``last_seen``, epoch seconds, same sparsity) is at or after
    ``cutoff`` are the test set; the earlier ones train."""
    m = interactions.matrix.tocsr()
    m.sort_indices()
    t = sp.csr_matrix(last_seen)
    t.sort_indices()
    if t.nnz != m.nnz or not np.array_equal(t.indices, m.indices):
        raise ValueError("last_seen must have exactly the sparsity pattern of the interactions")
    return _split_by_mask(interactions, m, t.data >= cutoff, name="time")


def cold_start_split(interactions: Interactions, item_share: float = 0.2, seed: int = 42) -> Split:
    """A seeded ``item_share`` of the items is held out with all their interactions (cold items)."""
    rng = np.random.default_rng(seed)
    m = interactions.matrix.tocsr()
    m.sort_indices()
    cold = np.zeros(m.shape[1], dtype=bool)
    cold[rng.choice(m.shape[1], size=int(round(item_share * m.shape[1])), replace=False)] = True
    split = _split_by_mask(interactions, m, cold[m.indices], name="cold_start")
    split.candidate_items = np.flatnonzero(cold)
    return split


def _split_by_mask(interactions: Interactions, m: sp.csr_matrix, test_mask: np.ndarray, name: str) -> Split:
    def part(mask: np.ndarray) -> sp.csr_matrix:
        out = m.copy()
        out.data = np.where(mask, out.data, 0).astype(out.dtype)
        out.eliminate_zeros()
        return out

    return Split(
        train=interactions.with_matrix(part(~test_mask)),
        test=interactions.with_matrix(part(test_mask)),
        name=name,
    )


def last_seen_matrix(frame: pd.DataFrame, interactions: Interactions, time_col: str = "timestamp") -> sp.csr_matrix:
    """Epoch seconds of each pair's latest row in ``frame`` (user_id, item_id, time_col), aligned to
    ``interactions``' ids and sparsity."""
    latest = frame.groupby(["user_id", "item_id"], sort=False)[time_col].max().reset_index()
    rows = pd.Index(interactions.user_ids).get_indexer(latest["user_id"].astype(str))
    cols = pd.Index(interactions.item_ids).get_indexer(latest["item_id"].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    secs = pd.to_datetime(latest[time_col], utc=True).astype("int64").to_numpy()[keep] / 1e9
    t = sp.csr_matrix((secs, (rows[keep], cols[keep])), shape=interactions.matrix.shape)
    # align to the interactions' sparsity (pairs the weights dropped, e.g. negatives, go away)
    pattern = interactions.matrix.copy().tocsr()
    pattern.data = np.ones_like(pattern.data)
    return t.multiply(pattern).tocsr()
