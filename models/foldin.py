"""Fold-in: a user vector from a row of interaction weights, without retraining.

Every servable model exposes a linear fold-in, ``user = weights @ matrix + tail``. Linear matters: the
feedback worker can then apply each new event as ``user += Δweight * matrix[item]`` against the fixed
item vectors of the model version being served, in constant time per event.

* low-rank EASE: exact (the map its training users get);
* LightFM and any other factor model: the ridge projection of the weights onto the item vectors,
  ``matrix = V (VᵀV + λI)⁻¹`` (least squares with unplayed items as zeros), bias coordinates in ``tail``;
* popularity: no personal part, ``tail`` = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FoldIn:
    matrix: np.ndarray  # float32 (n_items, d)
    tail: np.ndarray  # float32 (d,): the part of every user vector that does not depend on weights

    def vector(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The vector of a user whose weight on ``items`` is ``weights`` (and 0 elsewhere)."""
        out = self.tail.astype(np.float32).copy()
        if len(items):
            out += np.asarray(weights, dtype=np.float32) @ self.matrix[np.asarray(items)]
        return out

    def update(self, vector: np.ndarray, items: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """``vector`` after the weights on ``items`` changed by ``deltas``."""
        return (vector + np.asarray(deltas, dtype=np.float32) @ self.matrix[np.asarray(items)]).astype(np.float32)


def ridge_fold_in(item_vectors: np.ndarray, tail: np.ndarray | None = None, regularization: float = 0.05) -> FoldIn:
    """Least-squares fold-in onto ``item_vectors`` with a ridge of ``regularization`` times the mean
    eigenvalue of VᵀV (scale-free)."""
    v = np.asarray(item_vectors, dtype=np.float64)
    gram = v.T @ v
    lam = regularization * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-12)
    matrix = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), v.T).T
    return FoldIn(
        matrix.astype(np.float32), np.zeros(v.shape[1], np.float32) if tail is None else tail.astype(np.float32)
    )
