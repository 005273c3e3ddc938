"""An already-trained model scored on another model's split: how the champion would do on the
challenger's held-out data, so the promotion gate compares like with like.

The incumbent never saw the split's training rows as training data, but it serves any listener
through its linear fold-in (:mod:`models.foldin`): ``user = weights @ matrix + tail``, which is what
the feedback worker gives a listener from their events. So each test user gets the vector the
incumbent would serve them after learning their training row online, and the split's items are
ranked by the incumbent's item vectors. The two id spaces differ (the catalog grows, tracks leave):
items of the split that the incumbent lacks score -inf, so they are never recommended, and weight on
them moves no vector (the worker ignores events on tracks its version does not hold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import Recommender
from models.evaluation.protocol import evaluate
from models.evaluation.splits import Split
from models.interactions import Interactions


class FoldedIn:
    """``model`` serving the users and items of ``train`` (another id space) through its fold-in.
    Has what :func:`models.evaluation.evaluate` asks of a model: ``scores(users)`` over ``train``'s
    items and ``similarity_vectors()`` in ``train``'s item order."""

    def __init__(self, model: Recommender, train: Interactions) -> None:
        if not model.servable:
            raise ValueError(f"{model.name} models have no linear fold-in to score other users with: {model.not_servable_because}")
        self.model, self.n_items = model, train.n_items
        position = pd.Index(np.asarray(model.item_ids, dtype=str)).get_indexer(np.asarray(train.item_ids, dtype=str))
        self.known = position >= 0  # over train's items: does the incumbent hold it
        self.position = position[self.known]  # the incumbent's index of each known item, in train's order
        # train's rows in the incumbent's item space (columns it lacks dropped), so a user's vector is one
        # sparse product with the fold-in matrix and no remapped copy of it is kept
        selector = sp.csr_matrix(
            (np.ones(len(self.position), np.float32), (np.flatnonzero(self.known), self.position)), shape=(train.n_items, len(model.item_ids))
        )
        self.rows = (sp.csr_matrix(train.matrix, dtype=np.float32) @ selector).tocsr()
        self.fold = model.fold_in()
        self.item_vectors = model.item_vectors()

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """The incumbent's vectors of ``users`` (row indices of ``train``): their rows folded in."""
        return np.asarray(self.rows[np.asarray(users)] @ self.fold.matrix, dtype=np.float32) + self.fold.tail

    def scores(self, users: np.ndarray) -> np.ndarray:
        """float32 (len(users), train's items); -inf for the items the incumbent lacks."""
        own = self.user_vectors(users) @ self.item_vectors.T
        out = np.full((own.shape[0], self.n_items), -np.inf, dtype=np.float32)
        out[:, self.known] = own[:, self.position]
        return out

    def similarity_vectors(self) -> np.ndarray:
        """The incumbent's similarity vectors in train's item order (zeros for items it lacks: never
        recommended, so never in a list's diversity)."""
        own = self.model.similarity_vectors()
        out = np.zeros((self.n_items, own.shape[1]), dtype=np.float32)
        out[self.known] = own[self.position]
        return out


def evaluate_incumbent(model: Recommender, split: Split, k: int = 10, max_users: int | None = None, seed: int = 0) -> dict[str, float]:
    """:func:`models.evaluation.evaluate` of an already-trained ``model`` on ``split``, whose training
    rows it folds in (see :class:`FoldedIn`), with the same users, candidates and metrics as any model
    fitted on ``split.train``. Raises ValueError for a model without a fold-in."""
    return evaluate(FoldedIn(model, split.train), split, k=k, max_users=max_users, seed=seed)
