"""CUPED against regression (statsmodels OLS: the adjusted difference is the treatment coefficient of
y ~ variant + x) and on data whose right answer is known."""

import numpy as np
import pytest
import statsmodels.api as sm

from experiments.cuped import cuped_ratio_test, cuped_theta
from experiments.stats import ratio_test


def _ancova(y_c, x_c, y_t, x_t):
    """Treatment coefficient, its slope on x, from OLS y ~ 1 + treated + x."""
    y = np.concatenate([y_c, y_t])
    design = np.column_stack(
        [np.ones_like(y), np.r_[np.zeros(len(y_c)), np.ones(len(y_t))], np.concatenate([x_c, x_t])]
    )
    fit = sm.OLS(y, design).fit()
    return fit.params[1], fit.params[2]


def test_cuped_on_a_mean_equals_the_regression_adjusted_difference():
    rng = np.random.default_rng(0)
    x_c, x_t = rng.gamma(2, 10, 800), rng.gamma(2, 10, 700)
    y_c, y_t = 5 + 0.6 * x_c + rng.normal(0, 6, 800), 5.8 + 0.6 * x_t + rng.normal(0, 6, 700)
    result = cuped_ratio_test("listening_minutes", y_c, np.ones(800), x_c, y_t, np.ones(700), x_t)
    effect, slope = _ancova(y_c, x_c, y_t, x_t)
    assert cuped_theta(y_c, x_c, y_t, x_t) == pytest.approx(slope, rel=1e-9)
    assert result.absolute_lift == pytest.approx(effect, rel=1e-9)
    # standard error: the direct formula on the adjusted per-user values
    x_mean = np.r_[x_c, x_t].mean()
    adj_c, adj_t = y_c - slope * (x_c - x_mean), y_t - slope * (x_t - x_mean)
    assert result.control == pytest.approx(adj_c.mean(), rel=1e-9)
    assert result.std_error == pytest.approx(np.sqrt(adj_c.var(ddof=1) / 800 + adj_t.var(ddof=1) / 700), rel=1e-9)


def test_cuped_on_a_ratio_metric_adjusts_the_delta_method_linearisation():
    rng = np.random.default_rng(1)
    users = 1500
    taste = rng.beta(1, 9, 2 * users)  # each user's own click probability, before and during
    shown_pre, shown = rng.integers(20, 100, 2 * users), rng.integers(1, 40, 2 * users)
    clicks_pre = rng.binomial(shown_pre, taste)
    clicks = rng.binomial(shown, np.r_[taste[:users], taste[users:] * 1.05])
    pre_ctr = clicks_pre / shown_pre
    c, t = slice(0, users), slice(users, None)
    result = cuped_ratio_test("ctr", clicks[c], shown[c], pre_ctr[c], clicks[t], shown[t], pre_ctr[t])

    def linearised(num, den):  # r + (num - r·den) / mean(den): mean r, delta-method variance
        r = num.sum() / den.sum()
        return r + (num - r * den) / den.mean()

    effect, _ = _ancova(linearised(clicks[c], shown[c]), pre_ctr[c], linearised(clicks[t], shown[t]), pre_ctr[t])
    assert result.absolute_lift == pytest.approx(effect, rel=1e-9)
    plain = ratio_test("ctr", clicks[c], shown[c], clicks[t], shown[t])
    assert result.std_error < 0.9 * plain.std_error  # past taste explains much of this period's CTR


def test_cuped_recovers_a_known_slope_effect_and_variance_reduction():
    # y = 3 + 2x + e with var(x) = var(e) = 1: theta = 2, corr² = 0.8, so the variance falls to 1/5
    rng = np.random.default_rng(2)
    n = 20_000
    x_c, x_t = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y_c, y_t = 3 + 2 * x_c + rng.normal(0, 1, n), 3.1 + 2 * x_t + rng.normal(0, 1, n)
    ones = np.ones(n)
    adjusted, plain = cuped_ratio_test("m", y_c, ones, x_c, y_t, ones, x_t), ratio_test("m", y_c, ones, y_t, ones)
    assert cuped_theta(y_c, x_c, y_t, x_t) == pytest.approx(2.0, abs=0.02)
    assert (adjusted.std_error / plain.std_error) ** 2 == pytest.approx(0.2, abs=0.01)
    assert adjusted.absolute_lift == pytest.approx(0.1, abs=4 * adjusted.std_error)


def test_cuped_intervals_cover_the_true_effect_at_their_level():
    rng = np.random.default_rng(3)
    reps, n, effect = 400, 300, 0.25
    covered = 0
    for _ in range(reps):
        x_c, x_t = rng.normal(0, 1, n), rng.normal(0, 1, n)
        y_c, y_t = 1 + x_c + rng.standard_t(5, n), 1 + effect + x_t + rng.standard_t(5, n)
        lo, hi = cuped_ratio_test("m", y_c, np.ones(n), x_c, y_t, np.ones(n), x_t).absolute_ci
        covered += lo <= effect <= hi
    assert 0.92 <= covered / reps <= 0.98  # 95% intervals; 400 runs put 3.2 standard errors either side


def test_cuped_rejects_a_covariate_that_never_varies():
    with pytest.raises(ValueError, match="cannot explain any variance"):
        cuped_ratio_test("m", np.arange(5.0), np.ones(5), np.zeros(5), np.arange(5.0), np.ones(5), np.zeros(5))
