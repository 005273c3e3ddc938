"""Hyperparameter search: grid or random candidates, each fitted on a split's training part and
measured on its test part with :func:`models.evaluation.evaluate`.

A parameter space maps names to a list of choices or to a distribution (:class:`Uniform`,
:class:`LogUniform`, :class:`IntUniform`). ``callback(trial)`` runs after every trial, so a caller
(e.g. a Dagster asset) can log each one to MLflow as it finishes::

    space = {"regularization": LogUniform(0.1, 4.0), "popularity_exponent": [0.0, 0.25]}
    result = random_search("lowrank_ease", space, split, n_trials=20, callback=log_to_mlflow)
    result.best.params, result.best.metrics["ndcg_at_10"]

Tune on a validation split carved out of the training data, not on the test split you report.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.algorithms import create
from models.evaluation import evaluate
from models.evaluation.splits import Split
from models.features import ItemFeatures


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclass(frozen=True)
class IntUniform:
    low: int
    high: int  # inclusive

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))


Distribution = Uniform | LogUniform | IntUniform
Space = Mapping[str, list[Any] | tuple[Any, ...] | Distribution]


@dataclass
class Trial:
    number: int
    params: dict[str, Any]  # the searched parameters only (base parameters are not repeated)
    metrics: dict[str, float]
    fit_seconds: float


@dataclass
class SearchResult:
    algorithm: str
    metric: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """The trial with the highest ``metric`` (the first of equals)."""
        if not self.trials:
            raise ValueError("the search ran no trial")
        return max(self.trials, key=lambda t: (t.metrics[self.metric], -t.number))


def grid(space: Space) -> list[dict[str, Any]]:
    """Every combination of the choices (distributions are not allowed in a grid)."""
    for name, values in space.items():
        if not isinstance(values, list | tuple):
            raise ValueError(f"grid search needs a list of values for {name!r}, not {values!r}")
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def sample(space: Space, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` seeded random candidates: a random choice per list, a draw per distribution."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        candidate = {}
        for name, values in space.items():
            candidate[name] = (
                values.sample(rng) if hasattr(values, "sample") else values[int(rng.integers(len(values)))]
            )
        out.append(candidate)
    return out


def search(
    algorithm: str,
    candidates: Iterable[dict[str, Any]],
    split: Split,
    metric: str = "ndcg_at_10",
    k: int = 10,
    base_params: dict[str, Any] | None = None,
    item_features: ItemFeatures | None = None,
    callback: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Fit ``algorithm`` with ``base_params`` updated by each candidate on ``split.train``, evaluate it
    on ``split.test`` (metric keys as returned by :func:`models.evaluation.evaluate`)."""
    result = SearchResult(algorithm=algorithm, metric=metric)
    for number, params in enumerate(candidates):
        started = time.perf_counter()
        model = create(algorithm, **{**(base_params or {}), **params}).fit(split.train, item_features)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(model, split, k=k)
        if metric not in metrics:
            raise ValueError(f"unknown metric {metric!r}; evaluate() returns {sorted(metrics)}")
        trial = Trial(number=number, params=dict(params), metrics=metrics, fit_seconds=fit_seconds)
        result.trials.append(trial)
        if callback is not None:
            callback(trial)
    return result


def grid_search(algorithm: str, space: Space, split: Split, **kwargs: Any) -> SearchResult:
    """:func:`search` over every combination of ``space``."""
    return search(algorithm, grid(space), split, **kwargs)


def random_search(
    algorithm: str, space: Space, split: Split, n_trials: int = 20, seed: int = 0, **kwargs: Any
) -> SearchResult:
    """:func:`search` over ``n_trials`` seeded random draws from ``space``."""
    return search(algorithm, sample(space, n_trials, seed), split, **kwargs)


def space_from_json(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A search space from JSON (what a data scientist types in the Dagster launchpad): a list is a set
    of choices; ``{"uniform": [a, b]}``, ``{"log_uniform": [a, b]}`` and ``{"int_uniform": [a, b]}`` are
    distributions. Raises ValueError naming the parameter when a value is neither."""
    kinds = {"uniform": Uniform, "log_uniform": LogUniform, "int_uniform": IntUniform}
    space: dict[str, Any] = {}
    for name, value in spec.items():
        if isinstance(value, list) and value:
            space[name] = value
        elif isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in kinds:
            kind, bounds = next(iter(value.items()))
            if not (isinstance(bounds, list) and len(bounds) == 2):
                raise ValueError(f"{name}: {kind} needs [low, high]")
            space[name] = kinds[kind](*bounds)
        else:
            raise ValueError(
                f"{name}: give a list of choices or one of {', '.join(kinds)} with [low, high] (got {value!r})"
            )
    return space


# what the Dagster search job tries when not told otherwise
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "lowrank_ease": {
        "dimensions": [32, 64, 96],
        "regularization": {"log_uniform": [0.5, 10.0]},
        "popularity_exponent": {"uniform": [0.0, 0.5]},
        "user_norm_exponent": {"uniform": [0.3, 0.9]},
    },
    "lightfm": {
        "no_components": [32, 64],
        "learning_rate": {"log_uniform": [0.01, 0.1]},
        "epochs": [10, 20, 30],
        "loss": ["warp", "bpr"],
    },
    "ease": {"regularization": {"log_uniform": [50.0, 1000.0]}},
}
