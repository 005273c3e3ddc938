"""Popularity: every user gets the most widely liked items. The baseline every model must beat."""

from __future__ import annotations

import numpy as np

from models.base import Recommender
from models.features import ItemFeatures
from models.foldin import FoldIn
from models.interactions import Interactions


class Popularity(Recommender):
    """Item score = log1p(number of users with a positive interaction). One-dimensional vectors."""

    name = "popularity"

    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        users_per_item = np.asarray((interactions.matrix > 0).sum(axis=0)).ravel()
        self._item_scores = np.log1p(users_per_item).astype(np.float32)

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return np.ones((len(self.user_ids), 1), dtype=np.float32)

    def item_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self._item_scores[:, None]

    def fold_in(self) -> FoldIn:
        """Nothing personal: every user is [1]."""
        self._check_fitted()
        return FoldIn(np.zeros((len(self.item_ids), 1), np.float32), np.ones(1, np.float32))

    def similarity_vectors(self) -> np.ndarray:
        # popularity has no notion of likeness: "similar" means "popular"
        return self.item_vectors() / max(float(self._item_scores.max()), 1e-12)

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_scores": self._item_scores}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._item_scores = arrays["item_scores"]
