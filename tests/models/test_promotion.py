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


def test_the_champion_is_judged_on_the_same_pairs_when_it_was_scored_there():
    """Regression (issue 21): after a taste shift the retrained version scored 0.1249 on its split and
    was rejected against the champion's 0.1628 logged on an older split. Head to head, on the same
    held-out pairs, the two figures are compared (the logged one is kept in the record)."""
    decision = decide_promotion(
        METRIC,
        {METRIC: 0.1249},
        {METRIC: 0.1628},
        {METRIC: 0.05},
        margin=0.0,
        head_to_head=({METRIC: 0.21}, {METRIC: 0.17}),
    )
    assert decision.promoted and "on the same held-out pairs" in decision.reason and "0.1628" in decision.reason
    assert (decision.challenger, decision.challenger_compared, decision.champion, decision.champion_logged) == (
        0.1249,
        0.21,
        0.17,
        0.1628,
    )
    assert decision.compared_on == "same_split"
    # head to head it loses: rejected, although its whole-split figure beats the champion's logged one
    beaten = decide_promotion(
        METRIC, {METRIC: 0.20}, {METRIC: 0.10}, None, margin=0.0, head_to_head=({METRIC: 0.16}, {METRIC: 0.17})
    )
    assert (
        not beaten.promoted
        and (beaten.challenger_compared, beaten.champion) == (0.16, 0.17)
        and "does not beat the champion's 0.1700" in beaten.reason
    )
    # not scored on the same pairs (or no number there): the logged figure against the whole-split one, said so
    for missing in (None, ({METRIC: 0.21}, {METRIC: math.nan}), ({}, {METRIC: 0.17})):
        fallback = decide_promotion(
            METRIC, {METRIC: 0.1249}, {METRIC: 0.1628}, {METRIC: 0.05}, margin=0.0, head_to_head=missing
        )
        assert not fallback.promoted and fallback.compared_on == "logged" and "could not be scored" in fallback.reason
        assert (fallback.challenger_compared, fallback.champion) == (0.1249, 0.1628)
    first = decide_promotion(METRIC, {METRIC: 0.3}, None, None, margin=0.0, head_to_head=({METRIC: 0.3}, {METRIC: 0.4}))
    assert first.promoted and first.compared_on == "none"  # no champion: nothing to compare with


def test_a_champion_that_must_go_is_replaced_even_when_it_wins_head_to_head():
    erased = decide_promotion(
        METRIC,
        {METRIC: 0.20},
        {METRIC: 0.30},
        {METRIC: 0.10},
        margin=0.0,
        champion_must_go="erased",
        head_to_head=({METRIC: 0.2}, {METRIC: 0.35}),
    )
    assert erased.promoted and "because erased" in erased.reason and erased.compared_on == "same_split"
    # it must still beat popularity
    below = decide_promotion(
        METRIC,
        {METRIC: 0.09},
        None,
        {METRIC: 0.10},
        margin=0.0,
        champion_must_go="erased",
        head_to_head=({METRIC: 0.2}, {METRIC: 0.35}),
    )
    assert not below.promoted and "popularity" in below.reason
