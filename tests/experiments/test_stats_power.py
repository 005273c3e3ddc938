"""Power, minimum detectable effect and sample size against statsmodels.stats.power and the textbook
formulas."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower, normal_power_het

from experiments.power import (
    mde_for_mean,
    mde_for_proportion,
    power_for_mean,
    power_for_proportion,
    ratio_metric_sd,
    sample_size_for_mean,
    sample_size_for_proportion,
)

MEAN_CASES = [(10.0, 3.0, 0.03), (0.1, 0.09, 0.05), (42.0, 60.0, 0.02)]


@pytest.mark.parametrize(("baseline", "sd", "mde"), MEAN_CASES)
def test_mean_sample_size_is_the_smallest_that_reaches_the_power(baseline, sd, mde):
    users = sample_size_for_mean(baseline, sd, mde, alpha=0.05, power=0.8)
    effect_size = mde * baseline / sd
    reference = NormalIndPower()
    assert users % 2 == 0 and users == 2 * np.ceil(reference.solve_power(effect_size, alpha=0.05, power=0.8, ratio=1.0))
    assert reference.power(effect_size, users / 2, 0.05, ratio=1.0) >= 0.8
    assert reference.power(effect_size, users / 2 - 1, 0.05, ratio=1.0) < 0.8


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.3, 0.7), (0.5, 0.25, 0.25)])
def test_mean_power_and_mde_match_statsmodels(weights):
    users, baseline, sd = 5000, 10.0, 3.0
    share_c, share_t = weights[0] / sum(weights), weights[1] / sum(weights)
    alpha = 0.05 / (len(weights) - 1)  # Bonferroni across treatments, as the sample size does
    reference = NormalIndPower()
    power = power_for_mean(baseline, sd, 0.03, users, weights=weights)
    assert power == pytest.approx(
        reference.power(0.03 * baseline / sd, users * share_c, alpha, ratio=share_t / share_c), rel=1e-9
    )
    mde = mde_for_mean(baseline, sd, users, weights=weights)
    # statsmodels' power at our MDE is exactly the target (its own solve_power stops near 1e-5 relative)
    assert reference.power(mde * baseline / sd, users * share_c, alpha, ratio=share_t / share_c) == pytest.approx(
        0.8, abs=1e-9
    )
    assert mde * baseline / sd == pytest.approx(
        reference.solve_power(None, nobs1=users * share_c, alpha=alpha, power=0.8, ratio=share_t / share_c), rel=1e-4
    )
    needed = sample_size_for_mean(baseline, sd, 0.03, weights=weights)
    assert power_for_mean(baseline, sd, 0.03, needed, weights=weights) >= 0.8


def _proportion_se(p, delta, n_c, n_t):
    return np.sqrt(p * (1 - p) / n_c + (p + delta) * (1 - p - delta) / n_t)


@pytest.mark.parametrize(("rate", "mde"), [(0.1, 0.05), (0.3, 0.1), (0.02, 0.2)])
def test_proportion_sample_size_matches_the_unpooled_textbook_formula(rate, mde):
    # n per arm = (z_{1-a/2} + z_{1-b})² (p1 q1 + p2 q2) / (p2 - p1)²  (Chow, Shao & Wang, 2008, 4.2)
    users = sample_size_for_proportion(rate, mde, alpha=0.05, power=0.8)
    p2 = rate * (1 + mde)
    z = stats.norm.isf(0.025) + stats.norm.isf(0.2)
    per_arm = np.ceil(z**2 * (rate * (1 - rate) + p2 * (1 - p2)) / (p2 - rate) ** 2)
    assert users == 2 * per_arm
    delta = p2 - rate
    assert normal_power_het(delta, 1, 0.05, _proportion_se(rate, delta, users / 2, users / 2)) >= 0.8


@pytest.mark.parametrize(("rate", "users", "weights"), [(0.1, 100_000, (0.5, 0.5)), (0.35, 8_000, (0.2, 0.8))])
def test_proportion_power_and_mde_match_statsmodels_heterogeneous_normal_power(rate, users, weights):
    n_c, n_t = users * weights[0], users * weights[1]
    delta = 0.04 * rate
    se = _proportion_se(rate, delta, n_c, n_t)
    assert power_for_proportion(rate, 0.04, users, weights=weights) == pytest.approx(
        normal_power_het(delta, 1, 0.05, se), rel=1e-9
    )
    mde = mde_for_proportion(rate, users, weights=weights)
    mde_delta = mde * rate
    assert normal_power_het(mde_delta, 1, 0.05, _proportion_se(rate, mde_delta, n_c, n_t)) == pytest.approx(
        0.8, abs=1e-9
    )


def test_ratio_metric_sd_is_the_per_user_delta_method_spread():
    rng = np.random.default_rng(0)
    shown = rng.integers(1, 40, 5000)
    clicks = rng.binomial(shown, rng.beta(2, 18, 5000))
    ratio, sd = ratio_metric_sd(clicks, shown)
    assert ratio == pytest.approx(clicks.sum() / shown.sum(), rel=1e-12)
    assert sd == pytest.approx(np.std((clicks - ratio * shown) / shown.mean(), ddof=1), rel=1e-9)
    # clustering matters: per impression the binomial spread would be far smaller per user-sized unit
    assert sd > np.sqrt(ratio * (1 - ratio) / shown.mean())


def test_planning_inputs_are_checked():
    with pytest.raises(ValueError, match="relative_mde must be positive"):
        sample_size_for_mean(10, 3, 0.0)
    with pytest.raises(ValueError, match="baseline_rate"):
        sample_size_for_proportion(1.2, 0.05)
    with pytest.raises(ValueError, match="more users are needed"):
        mde_for_proportion(0.5, 10, power=0.999)
