"""The fixed-horizon tests against independent references: scipy's Welch t-test, statsmodels' two-proportion
tests and cluster-robust regression, and the textbook formulas."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats import proportion  # not its test_* names: pytest would collect them

from experiments.stats import Comparison, RatioMoments, mean_test, proportion_test, ratio_test


def _ctr_users(rng, n, rate):
    shown = rng.integers(1, 30, n)
    return rng.binomial(shown, np.clip(rng.beta(2, 18, n) * rate / 0.1, 0, 1)), shown


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


def test_delta_method_variance_equals_cluster_robust_regression_on_impressions():
    # Reference: regress each impression's click on a constant, clustering by user (statsmodels' sandwich,
    # no small-sample factor): its variance is the delta-method one with 1/n moments, ours uses 1/(n - 1)
    rng = np.random.default_rng(2)
    (clicks_c, shown_c), (clicks_t, shown_t) = _ctr_users(rng, 400, 0.10), _ctr_users(rng, 350, 0.11)
    result = ratio_test("ctr", clicks_c, shown_c, clicks_t, shown_t, alpha=0.1)

    def clustered(clicks, shown):
        users = np.repeat(np.arange(len(shown)), shown)
        clicked = np.concatenate([np.arange(s) < c for c, s in zip(clicks, shown)]).astype(float)
        fit = sm.OLS(clicked, np.ones_like(clicked)).fit(
            cov_type="cluster", cov_kwds={"groups": users, "use_correction": False}
        )
        return fit.params[0], fit.bse[0] ** 2 * len(shown) / (len(shown) - 1)

    (rc, vc), (rt, vt) = clustered(clicks_c, shown_c), clustered(clicks_t, shown_t)
    z = stats.norm.ppf(0.95)
    se = np.sqrt(vc + vt)
    assert result.control == pytest.approx(rc, rel=1e-12) and result.treatment == pytest.approx(rt, rel=1e-12)
    assert result.std_error == pytest.approx(se, rel=1e-6)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(rt - rc) / se), rel=1e-6)
    assert result.absolute_ci == pytest.approx((rt - rc - z * se, rt - rc + z * se), rel=1e-6)
    log_se = np.sqrt(vc / rc**2 + vt / rt**2)
    assert result.relative_ci == pytest.approx(
        (rt / rc * np.exp(-z * log_se) - 1, rt / rc * np.exp(z * log_se) - 1), rel=1e-6
    )


def test_ratio_moments_add_up_over_disjoint_users_and_batch_along_an_axis():
    rng = np.random.default_rng(3)
    clicks, shown = _ctr_users(rng, 1000, 0.1)
    whole = RatioMoments.of_users(clicks, shown)
    first, second = RatioMoments.of_users(clicks[:400], shown[:400]), RatioMoments.of_users(clicks[400:], shown[400:])
    summed = RatioMoments(*(a + b for a, b in zip(dataclasses.astuple(first), dataclasses.astuple(second))))
    assert summed.ratio() == pytest.approx(whole.ratio(), rel=1e-12)
    assert summed.variance() == pytest.approx(whole.variance(), rel=1e-9)
    batched = RatioMoments.of_users(clicks.reshape(4, 250), shown.reshape(4, 250))
    row = RatioMoments.of_users(clicks[250:500], shown[250:500])
    assert batched.variance()[1] == pytest.approx(row.variance(), rel=1e-12)
    # the direct formula: sample variance of (num - r·den) / mean(den), over n
    ratio = clicks.sum() / shown.sum()
    expected = np.var((clicks - ratio * shown) / shown.mean(), ddof=1) / len(shown)
    assert whole.variance() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_welch_t_test_matches_scipy(alpha):
    rng = np.random.default_rng(4)
    c, t = rng.gamma(2.0, 5.0, 400), rng.gamma(2.2, 5.0, 300)
    result = mean_test("listening_minutes", c, t, alpha)
    welch = stats.ttest_ind(t, c, equal_var=False)
    ci = welch.confidence_interval(1 - alpha)
    assert result.method == "Welch t-test"
    assert result.absolute_lift == pytest.approx(t.mean() - c.mean(), rel=1e-9)
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-6)
    assert result.absolute_ci == pytest.approx((ci.low, ci.high), rel=1e-6)
    assert result.std_error == pytest.approx(np.sqrt(c.var(ddof=1) / 400 + t.var(ddof=1) / 300), rel=1e-9)
    # relative interval: log-ratio delta method with the same t critical value
    crit = stats.t.ppf(1 - alpha / 2, welch.df)
    log_se = np.sqrt(c.var(ddof=1) / 400 / c.mean() ** 2 + t.var(ddof=1) / 300 / t.mean() ** 2)
    ratio = t.mean() / c.mean()
    assert result.relative_lift == pytest.approx(ratio - 1, rel=1e-9)
    assert result.relative_ci == pytest.approx(
        (ratio * np.exp(-crit * log_se) - 1, ratio * np.exp(crit * log_se) - 1), rel=1e-6
    )


def test_welch_t_test_refuses_zero_one_values():
    with pytest.raises(ValueError, match="use proportion_test"):
        mean_test("converted", np.array([0, 1, 1, 0]), np.array([1, 1, 0, 1]))


@pytest.mark.parametrize(("counts", "alpha"), [((480, 5000, 560, 5100), 0.05), ((37, 800, 21, 780), 0.01)])
def test_two_proportion_z_test_matches_statsmodels(counts, alpha):
    s_c, n_c, s_t, n_t = counts
    result = proportion_test("converted", s_c, n_c, s_t, n_t, alpha)
    wald = proportion.test_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    diff_ci = proportion.confint_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff", alpha=alpha)
    ratio_ci = proportion.confint_proportions_2indep(s_t, n_t, s_c, n_c, method="log", compare="ratio", alpha=alpha)
    assert result.absolute_lift == pytest.approx(s_t / n_t - s_c / n_c, rel=1e-12)
    assert result.p_value == pytest.approx(wald.pvalue, rel=1e-6)
    assert result.absolute_ci == pytest.approx(diff_ci, rel=1e-6)
    assert result.relative_ci == pytest.approx((ratio_ci[0] - 1, ratio_ci[1] - 1), rel=1e-6)


def test_two_proportion_z_test_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes in"):
        proportion_test("converted", 12, 10, 5, 10)


def test_comparison_keeps_the_fields_report_py_reads_in_their_order():
    # experiments/report.py builds on these names; new fields may only be appended with defaults
    names = [f.name for f in dataclasses.fields(Comparison)]
    assert names[:11] == [
        "metric",
        "control",
        "treatment",
        "absolute_lift",
        "absolute_ci",
        "relative_lift",
        "relative_ci",
        "p_value",
        "n_control",
        "n_treatment",
        "variant",
    ]
    legacy = Comparison("ctr", 0.1, 0.11, 0.01, (0.0, 0.02), 0.1, (0.0, 0.2), 0.04, 10, 10)
    assert legacy.adjusted_p_value is None and np.isnan(legacy.std_error)


def test_ratio_test_accepts_pandas_columns_as_report_py_passes_them():
    rng = np.random.default_rng(5)
    (clicks_c, shown_c), (clicks_t, shown_t) = _ctr_users(rng, 300, 0.1), _ctr_users(rng, 300, 0.1)
    from_series = ratio_test("ctr", pd.Series(clicks_c), pd.Series(shown_c), pd.Series(clicks_t), pd.Series(shown_t))
    from_arrays = ratio_test("ctr", clicks_c, shown_c, clicks_t, shown_t)
    assert from_series == from_arrays
