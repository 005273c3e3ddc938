"""Sample ratio mismatch against the chi-square goodness-of-fit formula."""

import numpy as np
import pytest
from scipy import stats

from experiments.srm import sample_ratio_check


def _pearson(observed, shares):
    observed = np.asarray(observed, dtype=float)
    expected = observed.sum() * np.asarray(shares) / np.sum(shares)
    statistic = ((observed - expected) ** 2 / expected).sum()
    return statistic, stats.chi2.sf(statistic, len(observed) - 1)


def test_a_52_48_split_of_20000_users_is_flagged():
    check = sample_ratio_check({"control": 10_400, "treatment": 9_600}, {"control": 0.5, "treatment": 0.5})
    statistic, p = _pearson([10_400, 9_600], [0.5, 0.5])
    assert check.chi_square == pytest.approx(32.0, rel=1e-12) and check.chi_square == pytest.approx(
        statistic, rel=1e-12
    )
    assert check.p_value == pytest.approx(p, rel=1e-9)
    assert check.mismatch and check.p_value < 1e-7


def test_uneven_weights_and_three_variants():
    users, weights = {"control": 5_130, "a": 2_400, "b": 2_470}, {"control": 0.5, "a": 0.25, "b": 0.25}
    check = sample_ratio_check(users, weights)
    statistic, p = _pearson([5_130, 2_400, 2_470], [0.5, 0.25, 0.25])
    assert check.chi_square == pytest.approx(statistic, rel=1e-12) and check.p_value == pytest.approx(p, rel=1e-9)
    assert check.expected == {"control": 5_000.0, "a": 2_500.0, "b": 2_500.0}
    assert not check.mismatch  # p ~ 0.04: unusual, but not below 0.001


def test_tiny_p_values_stay_positive():
    # regression: 1 - cdf (spotify-confidence's sample_ratio_test) rounds p-values below 1e-16 to 0
    check = sample_ratio_check({"control": 11_000, "treatment": 9_000}, {"control": 0.5, "treatment": 0.5})
    assert 0 < check.p_value == pytest.approx(stats.chi2.sf(200.0, 1), rel=1e-9)


def test_a_variant_without_users_counts_as_zero_and_unknown_variants_are_refused():
    check = sample_ratio_check({"control": 500}, {"control": 0.5, "treatment": 0.5})
    assert check.observed == {"control": 500, "treatment": 0} and check.mismatch
    with pytest.raises(ValueError, match="does not define"):
        sample_ratio_check({"control": 500, "ghost": 3}, {"control": 0.5, "treatment": 0.5})
