"""One evaluation protocol: rank every test user's candidates (training items excluded) and average
the per-user metrics."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.evaluation import metrics as m
from models.evaluation.splits import Split
from models.ranking import top_k

# scores are computed for this many (user, item) cells at a time: 16 users at a million items, so a
# batch of scores stays at 64 MB whatever the catalog
_BATCH_CELLS = 2**24


class Scorer(Protocol):
    """What the protocol asks of a model: a fitted :class:`models.base.Recommender`, or an
    already-trained one scored through its fold-in (:class:`models.evaluation.incumbent.FoldedIn`)."""

    def scores(self, users: np.ndarray) -> np.ndarray: ...

    def similarity_vectors(self) -> np.ndarray: ...


def evaluate(
    model: Scorer, split: Split, k: int = 10, batch: int = 2048, max_users: int | None = None, seed: int = 0
) -> dict[str, float]:
    """Mean test metrics of a model fitted on ``split.train``, plus catalog-level ones.

    Keys: ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``, ``map_at_{k}``, ``hit_rate_at_{k}``,
    ``auc``, ``coverage``, ``novelty``, ``diversity`` and ``users`` (test users evaluated). On a
    cold-start split only the held-out items are candidates. ``max_users``: evaluate a seeded sample of
    at most this many test users (every one when None).
    """
    users = split.test_users
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    train, test = split.train.matrix, split.test.matrix
    batch = max(1, min(batch, _BATCH_CELLS // max(train.shape[1], 1)))
    candidates = None
    if split.candidate_items is not None:
        candidates = np.zeros(train.shape[1], dtype=bool)
        candidates[split.candidate_items] = True
    ranking = {
        "precision": m.precision_at_k,
        "recall": m.recall_at_k,
        "ndcg": m.ndcg_at_k,
        "map": m.average_precision_at_k,
        "hit_rate": m.hit_rate_at_k,
    }
    per_user: dict[str, list[np.ndarray]] = {name: [] for name in [*ranking, "auc"]}
    lists = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = model.scores(chunk)
        exclude, relevant = train[chunk], test[chunk]
        recommended, _ = top_k(scores, k, exclude=exclude, allowed=candidates)
        lists.append(recommended)
        for name, metric in ranking.items():
            per_user[name].append(metric(recommended, relevant, k))
        per_user["auc"].append(m.auc(scores, relevant, exclude, candidates))
    out = {
        (f"{name}_at_{k}" if name != "auc" else name): float(np.nanmean(np.concatenate(v)))
        for name, v in per_user.items()
    }
    recommended = np.vstack(lists) if lists else np.empty((0, k), dtype=np.int64)
    n_users = max(train.shape[0], 1)
    popularity = np.maximum(np.asarray((train > 0).sum(axis=0)).ravel() / n_users, 1 / n_users)
    out["coverage"] = m.catalog_coverage(recommended, train.shape[1])
    out["novelty"] = float(np.nanmean(m.novelty(recommended, popularity)))
    out["diversity"] = float(np.nanmean(m.intra_list_diversity(recommended, model.similarity_vectors())))
    out["users"] = float(len(users))
    return out
