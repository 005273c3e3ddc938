"""The one recommender interface every algorithm implements.

Every model scores a user-item pair as the dot product of a user vector and an item vector
(``score(u, i) = user_vectors()[u] @ item_vectors()[i]``). That single convention lets the serving
layer rank any model's items from vectors in Redis, and lets the feedback worker fold new interactions
into a user vector without the training code.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from models.features import ItemFeatures
from models.foldin import FoldIn, ridge_fold_in
from models.interactions import Interactions
from models.ranking import top_k


class NotFittedError(RuntimeError):
    pass


def checked_params(algorithm: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``params`` over ``defaults``; an unknown name is an error that lists the known ones."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {algorithm} parameters: {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **params}


class Recommender(ABC):
    """Base class: subclasses implement ``fit``, ``user_vectors``, ``item_vectors`` and their state."""

    name: ClassVar[str]
    # Served online: the API ranks items by user vector @ item vectors, and the feedback worker learns
    # with a linear fold-in. A model that cannot do both is trained and evaluated offline only.
    servable: ClassVar[bool] = True
    not_servable_because: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self._train: sp.csr_matrix | None = None

    # --- to implement -------------------------------------------------------------------
    @abstractmethod
    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None: ...

    @abstractmethod
    def user_vectors(self) -> np.ndarray:
        """float32 (n_users, d): row u scores every item by a dot product with ``item_vectors``."""

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """float32 (n_items, d)."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that, with ``params``, restore the fitted model."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    # --- shared behaviour ---------------------------------------------------------------
    def fit(self, interactions: Interactions, item_features: ItemFeatures | None = None) -> Self:
        """Train on a users x items weight matrix (and item features, for algorithms that use them)."""
        if item_features is not None and len(item_features.item_ids) != interactions.n_items:
            raise ValueError("item_features must have one row per interaction column, in the same order")
        self.user_ids, self.item_ids = interactions.user_ids, interactions.item_ids
        self._train = interactions.matrix
        self._fit(interactions, item_features)
        return self

    @property
    def train_matrix(self) -> sp.csr_matrix | None:
        """The users x items matrix the model was fitted on (None for a model loaded without one)."""
        return self._train

    @property
    def is_fitted(self) -> bool:
        return self.item_ids is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit() or load() first")

    def fold_in(self) -> FoldIn:
        """The linear map from a user's item weights to a user vector (see :mod:`models.foldin`).
        Default: the ridge projection onto the item vectors; models with an exact map override it."""
        self._check_fitted()
        return ridge_fold_in(self.item_vectors())

    def similarity_vectors(self) -> np.ndarray:
        """Unit-norm item vectors for item-to-item similarity (cosine)."""
        v = self.item_vectors().astype(np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores (len(users), n_items) for user indices."""
        self._check_fitted()
        return self.user_vectors()[np.asarray(users)] @ self.item_vectors().T

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user.

        ``exclude`` is a users x items matrix (rows aligned with ``users``) whose non-zeros are never
        recommended, typically the training interactions; ``allowed`` is a boolean item mask.
        Rows with fewer than k eligible items are padded with index -1 and score -inf.
        """
        users = np.atleast_1d(np.asarray(users))
        return top_k(self.scores(users), k, exclude=exclude, allowed=allowed)

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar items (cosine on ``similarity_vectors``), the item itself excluded."""
        self._check_fitted()
        items = np.atleast_1d(np.asarray(items))
        v = self.similarity_vectors()
        sims = v[items] @ v.T
        own = sp.csr_matrix((np.ones(len(items)), (np.arange(len(items)), items)), shape=sims.shape)
        return top_k(sims, k, exclude=own)

    # --- persistence --------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` and ``arrays.npz`` into the folder ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"user_ids": self.user_ids, "item_ids": self.item_ids, **self._state()}
        np.savez(path / "arrays.npz", **arrays)
        if self._train is not None:  # kept so a loaded model can exclude what each user already has
            sp.save_npz(path / "train.npz", self._train.tocsr())
        meta = {
            "algorithm": self.name,
            "params": self.params,
            "n_users": len(self.user_ids),
            "n_items": len(self.item_ids),
        }
        (path / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def _from_folder(cls, path: Path, meta: dict[str, Any]) -> Self:
        model = cls(**meta["params"])
        with np.load(path / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        model.user_ids, model.item_ids = arrays.pop("user_ids"), arrays.pop("item_ids")
        if (path / "train.npz").exists():
            model._train = sp.load_npz(path / "train.npz").tocsr()
        model._restore(arrays)
        return model


class StoredVectors(Recommender):
    """A recommender whose fit leaves its vectors in ``_user_vecs`` and ``_item_vecs``."""

    _user_vecs: np.ndarray
    _item_vecs: np.ndarray

    def user_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self._user_vecs

    def item_vectors(self) -> np.ndarray:
        self._check_fitted()
        return self._item_vecs
