"""An already-trained model scored on another model's split: how the champion would do on the
challenger's held-out data, so the promotion gate compares like with like.

The incumbent serves any listener through its linear fold-in (:mod:`models.foldin`):
``user = weights @ matrix + tail``, which is what the feedback worker gives a listener from their
events. So each test user gets the vector the incumbent would serve them after learning their
training row online, and the split's items are ranked by the incumbent's item vectors. The two id
spaces differ (the catalog grows, tracks leave): items of the split that the incumbent lacks score
-inf, so they are never recommended, and weight on them moves no vector (the worker ignores events on
tracks its version does not hold).

Only held-out pairs the incumbent never trained on are a fair test of it (:func:`unseen_pairs`): it
was refit on all the data of its day, so most of a new random holdout is pairs it learned. Measured
on the taste-shift story's world: 0.6593 NDCG@10 for the champion on every held-out pair of the
retrained version's split, 0.3225 for the retrained version, which never saw them.
"""

from __future__ import annotations

from dataclasses import dataclass

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
            raise ValueError(
                f"{model.name} models have no linear fold-in to score other users with: {model.not_servable_because}"
            )
        self.model, self.n_items = model, train.n_items
        position = pd.Index(np.asarray(model.item_ids, dtype=str)).get_indexer(np.asarray(train.item_ids, dtype=str))
        self.known = position >= 0  # over train's items: does the incumbent hold it
        self.position = position[self.known]  # the incumbent's index of each known item, in train's order
        # train's rows in the incumbent's item space (columns it lacks dropped), so a user's vector is one
        # sparse product with the fold-in matrix and no remapped copy of it is kept
        selector = sp.csr_matrix(
            (np.ones(len(self.position), np.float32), (np.flatnonzero(self.known), self.position)),
            shape=(train.n_items, len(model.item_ids)),
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


def evaluate_incumbent(
    model: Recommender, split: Split, k: int = 10, max_users: int | None = None, seed: int = 0
) -> dict[str, float]:
    """:func:`models.evaluation.evaluate` of an already-trained ``model`` on ``split``, whose training
    rows it folds in (see :class:`FoldedIn`), with the same users, candidates and metrics as any model
    fitted on ``split.train``. Raises ValueError for a model without a fold-in."""
    return evaluate(FoldedIn(model, split.train), split, k=k, max_users=max_users, seed=seed)


def unseen_pairs(split: Split, model: Recommender) -> Split:
    """``split`` with its test part cut to the (user, item) pairs ``model`` never trained on (its
    ``train_matrix``, ids mapped): held-out data that neither it nor a model fitted on ``split.train``
    has seen. Raises ValueError for a model loaded without its training matrix."""
    seen = model.train_matrix
    if seen is None:
        raise ValueError(
            f"this {model.name} model was loaded without its training matrix: which held-out pairs it saw is unknown"
        )
    seen = sp.csr_matrix(seen).tocoo()
    users = pd.Index(np.asarray(model.user_ids, dtype=str)).get_indexer(np.asarray(split.test.user_ids, dtype=str))
    items = pd.Index(np.asarray(model.item_ids, dtype=str)).get_indexer(np.asarray(split.test.item_ids, dtype=str))
    test = split.test.matrix.tocoo()
    rows, cols = users[test.row].astype(np.int64), items[test.col].astype(np.int64)
    n_items = seen.shape[1]
    learned = (
        np.isin(rows * n_items + cols, seen.row[seen.data > 0].astype(np.int64) * n_items + seen.col[seen.data > 0])
        & (rows >= 0)
        & (cols >= 0)
    )
    kept = sp.csr_matrix(
        (test.data[~learned], (test.row[~learned], test.col[~learned])), shape=test.shape, dtype=split.test.matrix.dtype
    )
    return Split(
        train=split.train,
        test=split.test.with_matrix(kept),
        candidate_items=split.candidate_items,
        name=f"{split.name}, unseen by the incumbent",
    )


@dataclass
class HeadToHead:
    """A new model and the incumbent measured on the same held-out pairs, none of which either trained on."""

    model: dict[str, float]
    incumbent: dict[str, float]
    pairs: int  # the held-out (user, item) pairs new to the incumbent (both measured on them, or on a seeded sample of their users)


def head_to_head(
    model: Recommender, incumbent: Recommender, split: Split, k: int = 10, max_users: int | None = None, seed: int = 0
) -> HeadToHead | None:
    """``model`` (fitted on ``split.train``) and ``incumbent`` (folded in, see :class:`FoldedIn`) on the
    held-out pairs of ``split`` the incumbent never trained on (:func:`unseen_pairs`), with the same
    users, sample and metrics. None when there is no such pair (the data has not changed since the
    incumbent was trained). Raises ValueError for an incumbent without a fold-in or its training matrix."""
    fresh = unseen_pairs(split, incumbent)
    if not len(fresh.test_users):
        return None
    folded = FoldedIn(incumbent, split.train)
    measured = [evaluate(scorer, fresh, k=k, max_users=max_users, seed=seed) for scorer in (model, folded)]
    return HeadToHead(model=measured[0], incumbent=measured[1], pairs=int(fresh.test.nnz))
