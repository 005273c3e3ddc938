"""EASE (Steck 2019): the closed-form item-item model, kept as the exact reference.

``B = I − P diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹`` over the items played by at least
``min_users`` users; scores ``X B``. The vectors are a user's row of X and an item's column of B, so
their dimension is the number of kept items: right for offline evaluation, too wide to serve a large
catalog (the default :mod:`models.lowrank_ease` serves the same scores with 64 dimensions). Fitting
inverts a dense (kept items)² matrix: about 11 s and 1.3 GB for Last.fm's 6,000 items; memory grows with its square.
"""

from __future__ import annotations

import numpy as np

from models.base import Recommender, checked_params
from models.features import ItemFeatures
from models.interactions import Interactions

DEFAULTS = {"regularization": 200.0, "min_users": 2, "max_items": 20000}


class EASE(Recommender):
    name = "ease"
    servable = False
    not_servable_because = "its vectors have one dimension per item and it has no linear fold-in (an offline reference; lowrank_ease serves its scores in 64 dimensions)"

    def fold_in(self):
        raise NotImplementedError(f"{self.name} cannot be served online: {self.not_servable_because}")

    def __init__(self, **params) -> None:
        super().__init__(**checked_params(self.name, params, DEFAULTS))

    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        x = interactions.matrix.tocsr()
        users_per_item = np.asarray((x > 0).sum(axis=0)).ravel()
        self._kept = np.flatnonzero(users_per_item >= int(self.params["min_users"]))
        if len(self._kept) > int(self.params["max_items"]):
            raise ValueError(
                f"ease would invert a {len(self._kept)}² matrix (max_items={self.params['max_items']}); "
                "raise min_users or use lowrank_ease"
            )
        kept = x[:, self._kept].astype(np.float64)
        gram = (kept.T @ kept).toarray()
        gram[np.diag_indices_from(gram)] += float(self.params["regularization"])
        precision = np.linalg.inv(gram)
        b = precision / -np.diag(precision)
        b[np.diag_indices_from(b)] = 0.0
        self._b = b.astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Same values as the vectors' dot products, without densifying the user rows first."""
        self._check_fitted()
        out = np.zeros((len(np.atleast_1d(users)), len(self.item_ids)), dtype=np.float32)
        out[:, self._kept] = self._train[np.atleast_1d(users)][:, self._kept] @ self._b
        return out

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self._train[:, self._kept].toarray().astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        self._check_fitted()
        out = np.zeros((len(self.item_ids), len(self._kept)), dtype=np.float32)
        out[self._kept] = self._b.T
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {"kept": self._kept, "b": self._b}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._kept, self._b = arrays["kept"], arrays["b"]
