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
