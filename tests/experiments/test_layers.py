"""Experiments in layers: two experiments of different layers run on the same users at once, assigned
independently of each other, and each one's analysis finds its own effect, not the other's."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.analysis import analyse
from experiments.assignment import Assigner
from experiments.definition import Experiment

USERS = [f"user{i}" for i in range(20_000)]
TRACKS = [f"{i:022d}" for i in range(10)]


def _experiment(exp_id: str, layer: str, surface: str, **changes) -> Experiment:
    spec = {
        "id": exp_id,
        "name": exp_id,
        "layer": layer,
        "surface": surface,
        "min_sample_size": 1000,
        "guardrail_metrics": [],
        "variants": [
            {"name": "control", "model_version": "1", "weight": 0.5},
            {"name": "treatment", "model_version": "2", "weight": 0.5},
        ],
    }
    return Experiment.model_validate({**spec, **changes})


HOME = _experiment("home-ranker", "ranking", "recommendations")
SIMILAR = _experiment("similar-ranker", "similar-lists", "similar")


def test_experiments_of_different_layers_are_assigned_independently():
    home, similar = Assigner(HOME), Assigner(SIMILAR)
    table = pd.crosstab(pd.Series([home.variant(u) for u in USERS]), pd.Series([similar.variant(u) for u in USERS]))
    assert table.shape == (2, 2) and table.to_numpy().sum() == len(USERS)
    assert stats.chi2_contingency(table.to_numpy(), correction=False).pvalue > 0.01
    # within each home arm the similar-list split is still half and half
    for row in table.to_numpy():
        assert abs(row[0] / row.sum() - 0.5) < 0.02


def test_experiments_of_one_layer_never_share_a_user():
    first = _experiment("first", "ranking", "recommendations", traffic_allocation=0.5)
    second = _experiment("second", "ranking", "recommendations", layer_offset=0.5, traffic_allocation=0.5)
    a, b = Assigner(first), Assigner(second)
    in_a = [a.variant(u) is not None for u in USERS]
    in_b = [b.variant(u) is not None for u in USERS]
    assert not any(x and y for x, y in zip(in_a, in_b))
    assert (
        abs(np.mean(in_a) - 0.5) < 0.02 and abs(np.mean(in_b) - 0.5) < 0.02 and all(x or y for x, y in zip(in_a, in_b))
    )
    assert first.overlaps(_experiment("third", "ranking", "recommendations", layer_offset=0.25, traffic_allocation=0.5))
    assert not first.overlaps(_experiment("fourth", "other", "recommendations"))


def _clicks_world(lifts: dict[str, float], seed: int) -> pd.DataFrame:
    """One 10-track list per user per experiment, on each experiment's own surface; a user's chance to
    click is 8% times (1 + lift) for every experiment that has them in its treatment, on every surface
    (a treatment that makes users click more everywhere is the worst case for the other layer)."""
    rng = np.random.default_rng(seed)
    experiments = (HOME, SIMILAR)
    treated = {e.id: np.array([Assigner(e).variant(u) == "treatment" for u in USERS]) for e in experiments}
    p = 0.08 * np.prod([1 + lifts[e.id] * treated[e.id] for e in experiments], axis=0)
    frames = []
    start = pd.Timestamp("2026-03-02", tz="UTC")
    for e in experiments:
        users = np.repeat(np.array(USERS), len(TRACKS))
        position = np.tile(np.arange(len(TRACKS)), len(USERS))
        request = np.char.add(f"{e.id}-", users)
        variant = np.where(np.repeat(treated[e.id], len(TRACKS)), "treatment", "control")
        when = start + pd.to_timedelta(rng.integers(0, 5 * 86_400, len(USERS)).repeat(len(TRACKS)), unit="s")
        base = {
            "user_id": users,
            "track_id": np.array(TRACKS)[position],
            "timestamp": when,
            "experiment_id": e.id,
            "variant": variant,
            "request_id": request,
            "position": position,
            "surface": e.surface,
            "context_source": "server",
        }
        shown = pd.DataFrame(
            {
                **base,
                "type": "recommendation_shown",
                "event_id": np.char.add(request, np.char.add(":", position.astype(str))),
            }
        )
        clicked = rng.random(len(users)) < np.repeat(p, len(TRACKS))
        clicks = shown[clicked].assign(
            type="recommendation_clicked", event_id=lambda f: f["event_id"] + ":click", context_source="token"
        )
        frames += [shown, clicks]
    events = pd.concat(frames, ignore_index=True)
    events["ms_played"], events["rating"], events["algorithm"], events["model_version"] = None, None, None, None
    return events


@pytest.mark.slow
def test_each_layers_analysis_finds_its_own_effect_and_not_the_others():
    lifts = {HOME.id: 0.15, SIMILAR.id: 0.40}
    events = _clicks_world(lifts, seed=7)
    for experiment, other in ((HOME, SIMILAR), (SIMILAR, HOME)):
        result = analyse(experiment, events)
        (primary,) = result["primary"]
        low, high = primary["relative_ci"]
        assert low < lifts[experiment.id] < high, (experiment.id, primary)
        assert not low < lifts[other.id] < high  # the other layer's lift is balanced across this one's arms
        assert not result["sample_ratio"]["mismatch"]
        assert {v["variant"]: v["users"] for v in result["variants"]}.keys() == {"control", "treatment"}
    # and with the other layer's treatment switched off, this layer's estimate moves by less than its noise
    alone = analyse(HOME, _clicks_world({HOME.id: 0.15, SIMILAR.id: 0.0}, seed=7))["primary"][0]
    together = analyse(HOME, events)["primary"][0]
    assert (
        abs(alone["relative_lift"] - together["relative_lift"])
        < (together["relative_ci"][1] - together["relative_ci"][0]) / 2
    )
