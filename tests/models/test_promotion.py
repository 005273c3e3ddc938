"""The promotion gate: a pure function of the metrics."""

import math

from models.promotion import decide_promotion

METRIC = "test_ndcg_at_10"


def test_gate_requires_beating_baseline_and_champion():
    ok = decide_promotion(METRIC, {METRIC: 0.30}, None, {METRIC: 0.10}, margin=0.05)
    assert ok.promoted and "first model" in ok.reason
    no_base = decide_promotion(METRIC, {METRIC: 0.104}, None, {METRIC: 0.10}, margin=0.05)
    assert not no_base.promoted and "popularity" in no_base.reason
    no_champ = decide_promotion(METRIC, {METRIC: 0.30}, {METRIC: 0.29}, {METRIC: 0.10}, margin=0.05)
    assert not no_champ.promoted and "champion" in no_champ.reason
    better = decide_promotion(METRIC, {METRIC: 0.33}, {METRIC: 0.30}, {METRIC: 0.10}, margin=0.05)
    assert better.promoted


def test_a_missing_or_nan_metric_never_passes():
    nan = decide_promotion(METRIC, {METRIC: math.nan}, None, None, margin=0.0)
    assert not nan.promoted and "not a number" in nan.reason
    assert not decide_promotion(METRIC, {}, None, None, margin=0.0).promoted


def test_the_champion_is_judged_on_the_same_split_when_it_was_scored_there():
    """Regression (issue 21): after a taste shift the retrained version scored 0.1249 on its split and
    was rejected against the champion's 0.1628 logged on an older split; on the same split the champion
    scores lower, and that is the figure the gate must compare with (the logged one is kept)."""
    logged, same = {METRIC: 0.1628}, {METRIC: 0.1201}
    decision = decide_promotion(METRIC, {METRIC: 0.1249}, logged, {METRIC: 0.05}, margin=0.0, champion_on_same_split=same)
    assert decision.promoted and "on the same held-out data" in decision.reason and "0.1628" in decision.reason
    assert (decision.champion, decision.champion_logged, decision.compared_on) == (0.1201, 0.1628, "same_split")
    beaten = decide_promotion(METRIC, {METRIC: 0.1249}, {METRIC: 0.10}, None, margin=0.0, champion_on_same_split={METRIC: 0.13})
    assert not beaten.promoted and beaten.champion == 0.13  # a lower logged figure does not let it through either
    # not scored there (or no number): the logged figure, said so
    for missing in (None, {METRIC: math.nan}, {}):
        fallback = decide_promotion(METRIC, {METRIC: 0.1249}, logged, {METRIC: 0.05}, margin=0.0, champion_on_same_split=missing)
        assert not fallback.promoted and fallback.compared_on == "logged" and "could not be scored" in fallback.reason
    assert decide_promotion(METRIC, {METRIC: 0.3}, None, None, margin=0.0).compared_on == "none"


def test_a_champion_that_must_go_is_replaced_even_when_it_wins_on_the_same_split():
    erased = decide_promotion(METRIC, {METRIC: 0.20}, {METRIC: 0.30}, {METRIC: 0.10}, margin=0.0, champion_must_go="erased",
                              champion_on_same_split={METRIC: 0.35})  # fmt: skip
    assert erased.promoted and "because erased" in erased.reason and erased.compared_on == "same_split"
    # it must still beat popularity
    below = decide_promotion(METRIC, {METRIC: 0.09}, None, {METRIC: 0.10}, margin=0.0, champion_must_go="erased", champion_on_same_split={METRIC: 0.35})
    assert not below.promoted and "popularity" in below.reason
