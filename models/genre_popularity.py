"""Popularity per genre: the most popular items of the genres a user listens to.

score(u, i) = Σ_g share_u(g) · member_i(g) · log1p(users of i) + global_weight · log1p(users of i)

``share_u`` is the user's interaction weight per genre, smoothed towards the catalog's genre mix
(``prior_weight`` pseudo-interactions), ``member_i`` the item's genres with weights summing to 1.
Genres are the item features whose name starts with ``feature_prefix`` (``genre:`` as made by
:func:`models.features.track_features`). Vectors: one dimension per genre plus one for global
popularity, so items without a genre still rank (below the user's genres).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import StoredVectors, checked_params
from models.features import ItemFeatures
from models.interactions import Interactions

DEFAULTS = {"feature_prefix": "genre:", "prior_weight": 1.0, "global_weight": 0.01}


class GenrePopularity(StoredVectors):
    name = "genre_popularity"

    def __init__(self, **params) -> None:
        super().__init__(**checked_params(self.name, params, DEFAULTS))

    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        prefix = str(self.params["feature_prefix"])
        if item_features is None:
            raise ValueError("genre_popularity needs item features with genres (feature names starting with 'genre:')")
        genre_columns = np.flatnonzero(np.char.startswith(np.asarray(item_features.names, dtype=str), prefix))
        if not len(genre_columns):
            raise ValueError(
                f"no item feature name starts with {prefix!r}: set feature_prefix to the genre features' prefix"
            )
        member = sp.csr_matrix(item_features.matrix[:, genre_columns] > 0, dtype=np.float32)
        per_item = np.asarray(member.sum(axis=1)).ravel()
        member = sp.diags(1.0 / np.where(per_item > 0, per_item, 1.0)).astype(np.float32) @ member
        popularity = np.log1p(np.asarray((interactions.matrix > 0).sum(axis=0)).ravel()).astype(np.float32)
        self._item_vecs = np.hstack([member.multiply(popularity[:, None]).toarray(), popularity[:, None]]).astype(
            np.float32
        )
        self._member = member.tocsr()
        self._user_vecs = self.fold_in_users(interactions.matrix)

    def fold_in_users(self, matrix: sp.csr_matrix) -> np.ndarray:
        """User vectors from rows of weights over the model's items (their smoothed genre shares)."""
        per_genre = (sp.csr_matrix(matrix, dtype=np.float32) @ self._member).toarray()
        catalog_mix = np.asarray(self._member.sum(axis=0)).ravel()
        catalog_mix = catalog_mix / max(float(catalog_mix.sum()), 1e-12)
        prior = float(self.params["prior_weight"])
        shares = (per_genre + prior * catalog_mix) / (per_genre.sum(axis=1, keepdims=True) + prior)
        global_column = np.full((shares.shape[0], 1), float(self.params["global_weight"]))
        return np.hstack([shares, global_column]).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        member = self._member.tocoo()
        return {
            "user_vecs": self._user_vecs,
            "item_vecs": self._item_vecs,
            "member_row": member.row,
            "member_col": member.col,
            "member_data": member.data,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_vecs, self._item_vecs = arrays["user_vecs"], arrays["item_vecs"]
        shape = (self._item_vecs.shape[0], self._item_vecs.shape[1] - 1)
        self._member = sp.csr_matrix((arrays["member_data"], (arrays["member_row"], arrays["member_col"])), shape=shape)
