"""Holm-Bonferroni and Benjamini-Hochberg against the textbook step-down/step-up formulas, statsmodels
and the worked example of Benjamini & Hochberg (1995)."""

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from experiments.multiple_testing import adjust_comparisons, adjust_p_values
from experiments.stats import Comparison

# Benjamini & Hochberg (1995), section 4: fifteen p-values from a clinical trial
BH_1995 = [
    0.0001,
    0.0004,
    0.0019,
    0.0095,
    0.0201,
    0.0278,
    0.0298,
    0.0344,
    0.0459,
    0.3240,
    0.4262,
    0.5719,
    0.6528,
    0.7590,
    1.0,
]


def _holm(p):
    """Step-down: the i-th smallest times (m - i + 1), made non-decreasing, capped at 1."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out


def _benjamini_hochberg(p):
    """Step-up: the i-th smallest times m / i, made non-decreasing from the largest down, capped at 1."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = stepped
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adjusted_p_values_match_the_formulas_and_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.r_[rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 6), [0.02, 0.02]]  # with a tie
    rng.shuffle(p)
    holm, bh = adjust_p_values(p, "holm"), adjust_p_values(p, "benjamini-hochberg")
    assert holm == pytest.approx(_holm(p), abs=1e-12)
    assert bh == pytest.approx(_benjamini_hochberg(p), abs=1e-12)
    assert holm == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)
    assert bh == pytest.approx(multipletests(p, method="fdr_bh")[1], abs=1e-12)


def test_benjamini_hochberg_1995_example():
    # the paper rejects the four smallest at q = 0.05; Holm (like Bonferroni) only the three smallest
    assert (adjust_p_values(BH_1995, "benjamini-hochberg") < 0.05).sum() == 4
    assert (adjust_p_values(BH_1995, "holm") < 0.05).sum() == 3


def test_adjust_comparisons_fills_the_field_in_order():
    comparisons = [
        Comparison(m, 0.1, 0.11, 0.01, (0, 0.02), 0.1, (0, 0.2), p, 100, 100)
        for m, p in [("ctr", 0.01), ("completion_rate", 0.04), ("listening_minutes", 0.03)]
    ]
    adjusted = adjust_comparisons(comparisons, "holm")
    assert [c.metric for c in adjusted] == ["ctr", "completion_rate", "listening_minutes"]
    assert [c.adjusted_p_value for c in adjusted] == pytest.approx([0.03, 0.06, 0.06])
    assert [c.p_value for c in adjusted] == [0.01, 0.04, 0.03]


def test_unknown_correction_and_bad_p_values_are_refused():
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p_values([0.1], "bonferonni")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        adjust_p_values([0.1, 1.2])
