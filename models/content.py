"""Content-based recommender: items are their features (audio features, genres, tags), users the
weighted mean of the items they played. Needs no plays on an item, so it ranks brand-new tracks.

Item vector = the item's feature row scaled to unit length, projected onto the ``dimensions`` main
directions of the catalog's features when there are more features than that (so the vectors stay
servable); user vector = the interaction-weighted mean of the user's item vectors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from models.base import StoredVectors, checked_params
from models.features import ItemFeatures
from models.interactions import Interactions

DEFAULTS = {"dimensions": 64, "random_state": 42}


class ContentBased(StoredVectors):
    name = "content"

    def __init__(self, **params) -> None:
        super().__init__(**checked_params(self.name, params, DEFAULTS))

    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        if item_features is None or item_features.n_features == 0:
            raise ValueError("the content recommender needs item features (e.g. audio features, genres or tags)")
        rows = _unit_rows(item_features.matrix)
        dims = int(self.params["dimensions"])
        self._feature_names = np.asarray(item_features.names, dtype=str)
        if rows.shape[1] > dims and min(rows.shape) > dims:
            v0 = np.random.default_rng(int(self.params["random_state"])).standard_normal(min(rows.shape))
            _, _, vt = svds(rows, k=dims, v0=v0)
            self._projection = vt.T.astype(np.float32)  # (n_features, dims)
        else:
            self._projection = np.eye(rows.shape[1], dtype=np.float32)
        self._item_vecs = np.asarray(rows @ self._projection, dtype=np.float32)
        self._user_vecs = self.fold_in_users(interactions.matrix)

    def fold_in_users(self, matrix: sp.csr_matrix) -> np.ndarray:
        """User vectors from rows of weights over the model's items."""
        weights = sp.csr_matrix(matrix, dtype=np.float32)
        totals = np.asarray(weights.sum(axis=1)).ravel()
        return np.asarray(
            sp.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ weights @ self._item_vecs, dtype=np.float32
        )

    def cold_item_vectors(self, features: ItemFeatures) -> np.ndarray:
        """Vectors for items unseen in training (features the model was not fitted with are ignored)."""
        self._check_fitted()
        column = {n: i for i, n in enumerate(self._feature_names)}
        idx = np.array([column.get(n, -1) for n in np.asarray(features.names, dtype=str)], dtype=np.int64)
        known = np.flatnonzero(idx >= 0)
        picker = sp.csr_matrix((np.ones(len(known)), (known, idx[known])), shape=(len(idx), len(self._feature_names)))
        return np.asarray(_unit_rows(features.matrix @ picker) @ self._projection, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_vecs": self._user_vecs,
            "item_vecs": self._item_vecs,
            "projection": self._projection,
            "feature_names": self._feature_names,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_vecs, self._item_vecs = arrays["user_vecs"], arrays["item_vecs"]
        self._projection, self._feature_names = arrays["projection"], arrays["feature_names"]


def _unit_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix).tocsr()
