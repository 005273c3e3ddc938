"""Top-k selection with exclusions and item filters, shared by offline evaluation and serving."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best columns of each row, best first.

    ``exclude``: sparse matrix of the same shape whose non-zeros are removed. ``allowed``: boolean mask
    over columns. Rows with fewer than k eligible columns are padded with index -1 and score -inf.
    """
    scores = np.array(scores, dtype=np.float32, copy=True, ndmin=2)
    n_rows, n_cols = scores.shape
    if allowed is not None:
        scores[:, ~np.asarray(allowed, dtype=bool)] = -np.inf
    if exclude is not None:
        coo = sp.coo_matrix(exclude)
        scores[coo.row, coo.col] = -np.inf
    k_eff = min(k, n_cols)
    if k_eff <= 0:
        return np.full((n_rows, k), -1, dtype=np.int64), np.full((n_rows, k), -np.inf, dtype=np.float32)
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isneginf(best), -1, idx)
    if k_eff < k:
        idx = np.pad(idx, ((0, 0), (0, k - k_eff)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return idx.astype(np.int64), best


def top_n(
    scores: np.ndarray,
    n: int,
    excluded: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One row's best ``n`` indices and scores, best first (the serving hot path: no sparse matrices).

    ``excluded``: indices never returned; ``allowed``: boolean mask of eligible indices. Fewer than
    ``n`` results when fewer are eligible.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if allowed is not None:
        scores[~allowed] = -np.inf
    if excluded is not None and len(excluded):
        scores[excluded] = -np.inf
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    return top.astype(np.int64), scores[top]


def first_in_order(
    order: np.ndarray,
    n: int,
    excluded: np.ndarray | None = None,
    allowed: tuple[np.ndarray, ...] = (),
    skipped: np.ndarray | None = None,
    limit: int | None = None,
) -> np.ndarray | None:
    """The first ``n`` rows of ``order`` (a precomputed ranking, best first) that every mask of ``allowed``
    allows, ``skipped`` (a boolean mask) does not mark and ``excluded`` does not name; fewer when the
    order runs out. Walked in chunks that double, so the rows visited are about ``(n + len(excluded)) /
    share allowed``, not the whole order. Returns None once ``limit`` rows were visited without ``n``
    found (a selective filter: the caller ranks the rows it allows exactly instead)."""
    n_excluded = 0 if excluded is None else len(excluded)
    found: list[np.ndarray] = []
    have, start, step = 0, 0, max(64, 2 * (n + n_excluded))
    while have < n and start < len(order):
        if limit is not None and start >= limit:
            return None
        chunk = order[start : start + step]
        for mask in allowed:
            chunk = chunk[mask[chunk]]
        if skipped is not None:
            chunk = chunk[~skipped[chunk]]
        if n_excluded:
            chunk = chunk[~np.isin(chunk, excluded)]
        found.append(chunk)
        have += len(chunk)
        start, step = start + step, step * 2
    rows = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
    return rows[:n].astype(np.int64, copy=False)


def top_k_shared(scores: np.ndarray, k: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of one score vector every row shares (e.g. popularity), each row excluding its own
    non-zeros of ``exclude`` (n_rows x n_items): only the ``k`` + (most exclusions of a row) best columns
    can make a row's list, so each row ranks those instead of the whole catalog. The same lists as
    ``top_k(np.tile(scores, (n_rows, 1)), k, exclude)`` (up to the order of equal scores)."""
    scores = np.asarray(scores, dtype=np.float32).ravel()
    exclude = sp.csr_matrix(exclude)
    pool = min(len(scores), k + int(np.diff(exclude.indptr).max(initial=0)))
    if pool <= 0:
        return top_k(np.tile(scores, (exclude.shape[0], 1)), k, exclude)
    candidates = np.argpartition(-scores, pool - 1)[:pool] if pool < len(scores) else np.arange(len(scores))
    idx, best = top_k(np.tile(scores[candidates], (exclude.shape[0], 1)), k, exclude[:, candidates])
    return np.where(idx >= 0, candidates[np.maximum(idx, 0)], -1), best
