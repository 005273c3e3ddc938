"""Train, evaluate honestly, refit: the one training procedure behind the Dagster asset and the CLI.

1. Build the interaction matrix over the catalog (tracks nobody played still get a column).
2. Hold out a seeded share of each user's items; fit the model and the popularity baseline on the rest
   and measure both on the held-out items only (of a seeded sample of users when the catalog is large).
   An ``incumbent`` (the champion being served) and the model are also measured head to head on the
   held-out pairs the incumbent never trained on, the incumbent through its fold-in of the same
   training rows, so the gate compares the two on the same data.
3. Refit the model on all interactions for serving. The metrics reported are the held-out ones.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.algorithms import create
from models.base import Recommender
from models.evaluation import HeadToHead, evaluate, head_to_head, random_holdout
from models.features import ItemFeatures, track_features
from models.interactions import Interactions

# held-out evaluation scores at most about this many (user, item) cells: every test user of a catalog of
# 100,000 tracks or fewer at the default data size, a seeded sample of 2,147 users at a million tracks
EVAL_CELLS = 2**31
EVAL_MIN_USERS = 1000


@dataclass
class TrainingResult:
    model: Recommender
    algorithm: str
    params: dict[str, Any]
    metrics: dict[str, float]  # held-out metrics of the model, prefixed test_
    baseline_metrics: dict[str, float]  # held-out metrics of popularity on the same split
    fingerprint: str
    fit_seconds: float
    data: dict[str, int] = field(default_factory=dict)
    # the model and the incumbent (the model serving now) on the held-out pairs the incumbent never trained on,
    # prefixed test_; None without an incumbent or without such pairs
    head_to_head: HeadToHead | None = None
    # what the released model is: "full" (a second fit on all data from scratch), "warm_started:..." (a
    # fit on all data reusing the evaluation fit's work, see LowRankEASE.warm_start) or
    # "reused_evaluation_fit" (refit=False: the evaluation fit itself)
    refit: str = "full"


def fingerprint(frame: pd.DataFrame, columns: tuple[str, ...] = ("user_id", "item_id", "weight")) -> str:
    """Content hash of a training table (order-independent), logged with every run."""
    ordered = frame[list(columns)].sort_values(list(columns[:2])).reset_index(drop=True)
    digest = hashlib.sha256(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def build_inputs(interactions: pd.DataFrame, tracks: pd.DataFrame | None) -> tuple[Interactions, ItemFeatures | None]:
    """Positive interactions as a matrix and the item features. Columns: the catalog's tracks (so
    tracks nobody played still get a column and a cold-start vector) followed by any interacted item
    the catalog does not hold (an interaction log may name artists or items of another service)."""
    positives = interactions[interactions["weight"] > 0]
    item_ids = None
    if tracks is not None:
        catalog = tracks["track_id"].astype(str).to_numpy()
        extra = pd.Index(positives["item_id"].astype(str).unique()).difference(pd.Index(catalog))
        item_ids = np.concatenate([catalog, extra.to_numpy(dtype=str)]) if len(extra) else catalog
    matrix = Interactions.from_frame(positives, item_ids=item_ids)
    features = track_features(tracks, matrix.item_ids) if tracks is not None else None
    return matrix, features


def train(
    interactions: pd.DataFrame,
    tracks: pd.DataFrame | None,
    algorithm: str,
    params: dict[str, Any] | None = None,
    k: int = 10,
    test_share: float = 0.2,
    seed: int = 42,
    refit: bool = True,
    incumbent: Recommender | None = None,
) -> TrainingResult:
    """Evaluate ``algorithm`` on a per-user holdout against popularity, then (``refit``) fit on all data.
    ``incumbent``: an already-trained servable model (the champion) measured against the model on the
    held-out pairs it never trained on (:func:`models.evaluation.head_to_head`): ``TrainingResult.head_to_head``."""
    params = dict(params or {})
    matrix, features = build_inputs(interactions, tracks)
    split = random_holdout(matrix, test_share=test_share, min_items=5, seed=seed)

    started = time.perf_counter()
    candidate = create(algorithm, **params).fit(split.train, features)
    fit_seconds = time.perf_counter() - started
    eval_users = max(EVAL_MIN_USERS, EVAL_CELLS // max(matrix.n_items, 1))
    metrics = {
        f"test_{name}": value
        for name, value in evaluate(candidate, split, k=k, max_users=eval_users, seed=seed).items()
    }
    baseline = create("popularity").fit(split.train)
    baseline_metrics = {
        f"test_{name}": value for name, value in evaluate(baseline, split, k=k, max_users=eval_users, seed=seed).items()
    }
    versus = (
        head_to_head(candidate, incumbent, split, k=k, max_users=eval_users, seed=seed)
        if incumbent is not None
        else None
    )
    if versus is not None:
        versus = HeadToHead(
            {f"test_{n}": v for n, v in versus.model.items()},
            {f"test_{n}": v for n, v in versus.incumbent.items()},
            versus.pairs,
        )

    if refit:
        model = create(algorithm, **params)
        if hasattr(model, "warm_start"):
            model.warm_start(candidate)  # the item-side work of the evaluation fit, reused
        model.fit(matrix, features)
        refit_mode = getattr(model, "refit", "full")
    else:
        model, refit_mode = candidate, "reused_evaluation_fit"
    return TrainingResult(
        model=model,
        algorithm=algorithm,
        params=model.params,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        fingerprint=fingerprint(interactions[interactions["weight"] > 0]),
        fit_seconds=fit_seconds,
        data={
            "users": matrix.n_users,
            "items": matrix.n_items,
            "interactions": matrix.nnz,
            "test_interactions": split.test.nnz,
            "items_with_interactions": int((np.diff(matrix.matrix.tocsc().indptr) > 0).sum()),
        },
        head_to_head=versus,
        refit=refit_mode,
    )
