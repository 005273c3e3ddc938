import numpy as np
import pytest
from scipy import stats

from experiments.stats import ratio_test


def test_per_user_mean_matches_welch_normal_approximation():
    rng = np.random.default_rng(0)
    c, t = rng.normal(10, 3, 4000), rng.normal(10.3, 3.5, 4000)
    ones = np.ones(4000)
    result = ratio_test("listening_minutes", c, ones, t, ones)
    welch = stats.ttest_ind(t, c, equal_var=False)
    assert result.absolute_lift == pytest.approx(t.mean() - c.mean())
    # same standard error as Welch's t: the statistic matches, and the p-value is its normal tail
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(welch.statistic)), rel=1e-9)


def test_ratio_metric_detects_a_real_lift_and_not_a_null_one():
    rng = np.random.default_rng(1)
    shown_c, shown_t = rng.integers(5, 30, 3000), rng.integers(5, 30, 3000)
    clicks_c, clicks_t = rng.binomial(shown_c, 0.10), rng.binomial(shown_t, 0.12)
    lift = ratio_test("ctr", clicks_c, shown_c, clicks_t, shown_t)
    assert lift.p_value < 1e-6 and lift.relative_ci[0] > 0 and lift.relative_lift == pytest.approx(0.2, abs=0.06)
    null = ratio_test("ctr", clicks_c, shown_c, rng.binomial(shown_t, 0.10), shown_t)
    assert null.p_value > 0.001 and null.relative_ci[0] < 0 < null.relative_ci[1]
