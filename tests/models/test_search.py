import numpy as np
import pytest

from models.evaluation import random_holdout
from models.search import IntUniform, LogUniform, Uniform, grid, grid_search, random_search, sample


def test_grid_is_every_combination_and_rejects_distributions():
    assert grid({"a": [1, 2], "b": ["x", "y", "z"]}) == [{"a": a, "b": b} for a in (1, 2) for b in "xyz"]
    with pytest.raises(ValueError, match="list of values for 'a'"):
        grid({"a": Uniform(0, 1)})


def test_samples_are_seeded_and_inside_their_ranges():
    space = {"u": Uniform(1.0, 2.0), "l": LogUniform(0.01, 100.0), "i": IntUniform(3, 5), "c": ["p", "q"]}
    draws = sample(space, 50, seed=7)
    assert draws == sample(space, 50, seed=7) and draws != sample(space, 50, seed=8)
    assert all(1 <= d["u"] <= 2 and 0.01 <= d["l"] <= 100 and d["i"] in (3, 4, 5) and d["c"] in "pq" for d in draws)
    assert {d["i"] for d in draws} == {3, 4, 5}
    assert np.median([d["l"] for d in draws]) < 10  # log-uniform: half the draws below the geometric mean 1


def test_random_search_reports_every_trial_and_the_best(blocks):
    split = random_holdout(blocks, test_share=0.25, seed=1)
    seen = []
    result = random_search(
        "lowrank_ease",
        {"regularization": LogUniform(0.1, 10.0)},
        split,
        n_trials=3,
        base_params={"dimensions": 6},
        callback=seen.append,
    )
    assert [t.number for t in seen] == [0, 1, 2] and result.trials == seen
    assert result.best.metrics["ndcg_at_10"] == max(t.metrics["ndcg_at_10"] for t in seen)
    assert set(seen[0].params) == {"regularization"} and seen[0].fit_seconds >= 0


def test_grid_search_beats_popularity_on_blocks_and_checks_the_metric_name(blocks):
    split = random_holdout(blocks, test_share=0.25, seed=1)
    result = grid_search("lowrank_ease", {"dimensions": [4, 8]}, split, metric="precision_at_10")
    baseline = grid_search("popularity", {}, split, metric="precision_at_10")  # an empty grid is one trial
    assert result.best.metrics["precision_at_10"] > 1.5 * baseline.best.metrics["precision_at_10"]
    with pytest.raises(ValueError, match="unknown metric 'ndcg'"):
        grid_search("popularity", {}, split, metric="ndcg")
