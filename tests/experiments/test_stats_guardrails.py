"""Guardrail verdicts against statsmodels' one-sided two-sample z-test."""

import numpy as np
import pytest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.guardrails import guardrail_verdict
from experiments.stats import ratio_test


def _users(rng, n, mean):
    return rng.gamma(4.0, mean / 4.0, n)


@pytest.mark.parametrize(("lower_is_better", "margin"), [(True, 0.0), (True, 0.02), (False, 0.0), (False, 0.03)])
def test_one_sided_p_value_matches_statsmodels(lower_is_better, margin):
    rng = np.random.default_rng(0)
    c, t = _users(rng, 3000, 100.0), _users(rng, 2800, 101.5)
    comparison = ratio_test("latency_ms", c, np.ones_like(c), t, np.ones_like(t))
    verdict = guardrail_verdict(comparison, lower_is_better=lower_is_better, alpha=0.05, margin=margin)
    tolerated = margin * c.mean()
    means = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    if lower_is_better:  # harm is a rise: H1 treatment - control > tolerated
        _, p = means.ztest_ind(alternative="larger", usevar="unequal", value=tolerated)
    else:  # harm is a fall: H1 treatment - control < -tolerated
        _, p = means.ztest_ind(alternative="smaller", usevar="unequal", value=-tolerated)
    assert verdict.p_value == pytest.approx(p, rel=1e-6)
    assert verdict.breached == (p < 0.05)


def test_a_significant_rise_in_skip_rate_breaches_and_a_fall_does_not():
    rng = np.random.default_rng(1)
    shown_c, shown_t = rng.integers(5, 30, 4000), rng.integers(5, 30, 4000)
    worse = ratio_test("skip_rate", rng.binomial(shown_c, 0.30), shown_c, rng.binomial(shown_t, 0.33), shown_t)
    better = ratio_test("skip_rate", rng.binomial(shown_c, 0.30), shown_c, rng.binomial(shown_t, 0.27), shown_t)
    breach = guardrail_verdict(worse, lower_is_better=True)
    assert breach.breached and breach.harm > 0 and "rose" in breach.reason
    fine = guardrail_verdict(better, lower_is_better=True)
    assert not fine.breached and fine.harm < 0 and fine.ruled_out


def test_a_margin_tolerates_small_harm_and_rules_out_larger_harm():
    rng = np.random.default_rng(2)
    shown_c, shown_t = rng.integers(5, 30, 20_000), rng.integers(5, 30, 20_000)
    same = ratio_test("skip_rate", rng.binomial(shown_c, 0.30), shown_c, rng.binomial(shown_t, 0.30), shown_t)
    verdict = guardrail_verdict(same, lower_is_better=True, margin=0.03)
    assert not verdict.breached and verdict.ruled_out and "ruled out" in verdict.reason
    with pytest.raises(ValueError, match="cannot be negative"):
        guardrail_verdict(same, lower_is_better=True, margin=-0.01)
