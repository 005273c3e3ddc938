"""Sequential tests against the published formulas, a numerical integral of the two-look boundary
crossing probability, and a simulation of daily peeking."""

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from experiments.sequential import (
    always_valid_comparison,
    always_valid_p_value,
    confidence_sequence_radius,
    group_sequential_boundary,
    group_sequential_comparison,
    mixture_variance,
)
from experiments.stats import ratio_test


def test_mixture_variance_minimises_the_confidence_sequence_at_the_planned_variance():
    planned = 2.5e-5
    tau2 = mixture_variance(planned, alpha=0.05)
    best = optimize.minimize_scalar(
        lambda t: confidence_sequence_radius(planned, t, 0.05),
        bounds=(planned / 100, planned * 100),
        method="bounded",
        options={"xatol": 1e-14},
    )
    assert tau2 == pytest.approx(best.x, rel=1e-4)  # the radius is flat at its minimum: compare radii tightly
    assert confidence_sequence_radius(planned, tau2, 0.05) == pytest.approx(best.fun, rel=1e-9)


def test_always_valid_p_value_matches_johari_et_al_for_paired_observations():
    # Johari et al. (2017), normal mixture over n pairs with known variance sigma² per observation:
    # Λ = sqrt(2σ² / (2σ² + nτ²)) · exp(n²τ²θ̂² / (4σ²(2σ² + nτ²)))
    sigma2, tau2 = 4.0, 0.01
    n = np.array([50, 500, 5000])
    theta = np.array([0.3, 0.12, 0.05])
    lam = np.sqrt(2 * sigma2 / (2 * sigma2 + n * tau2)) * np.exp(
        n**2 * tau2 * theta**2 / (4 * sigma2 * (2 * sigma2 + n * tau2))
    )
    expected = np.minimum(1.0, 1 / lam)
    assert always_valid_p_value(theta, 2 * sigma2 / n, tau2) == pytest.approx(expected, rel=1e-12)


def test_confidence_sequence_edge_is_where_the_p_value_reaches_alpha():
    variance, tau2, alpha = 3e-6, 2e-5, 0.05
    radius = confidence_sequence_radius(variance, tau2, alpha)
    assert always_valid_p_value(radius, variance, tau2) == pytest.approx(alpha, rel=1e-9)


def test_first_boundary_spends_alpha_times_t_squared():
    boundary = group_sequential_boundary([0.25, 0.5, 1.0], alpha=0.05)
    assert boundary[0] == pytest.approx(stats.norm.isf(0.05 * 0.25**2 / 2), rel=1e-9)
    assert np.all(np.diff(boundary) < 0)


@pytest.mark.parametrize("looks", [(0.5, 1.0), (0.3, 0.8)])
def test_two_look_boundary_crossing_probability_matches_a_numerical_integral(looks):
    # Under no effect the z-statistics of two looks are standard normal with correlation sqrt(t1 / t2);
    # the chance of crossing either boundary must be the alpha spent by t2: 0.05 · t2²
    (t1, t2), alpha = looks, 0.05
    b1, b2 = group_sequential_boundary(looks, alpha)
    rho = np.sqrt(t1 / t2)
    scale = np.sqrt(1 - rho**2)

    def inside_at_second(z1):
        return stats.norm.pdf(z1) * (stats.norm.cdf((b2 - rho * z1) / scale) - stats.norm.cdf((-b2 - rho * z1) / scale))

    never_crossed, _ = integrate.quad(inside_at_second, -b1, b1, epsabs=1e-13, epsrel=1e-12)
    # spotify-confidence's solver (a port of R's ldbounds: trapezoid grid of step 0.05) spends within
    # about 4e-6 of the exact alpha (|z| bounds within ~4e-5), looser than the 1e-6 held elsewhere
    assert 1 - never_crossed == pytest.approx(alpha * t2**2, abs=5e-6)


def test_daily_peeking_keeps_the_false_positive_rate_of_both_designs():
    # Brownian motion of the z-statistic over 14 equally spaced looks, no true effect
    rng = np.random.default_rng(0)
    looks, runs, alpha = 14, 40_000, 0.05
    sums = np.cumsum(rng.standard_normal((runs, looks)), axis=1)
    n = np.arange(1, looks + 1)
    z = sums / np.sqrt(n)
    naive = np.mean((np.abs(z) > stats.norm.isf(alpha / 2)).any(axis=1))
    group = np.mean((np.abs(z) >= group_sequential_boundary(n / looks, alpha)).any(axis=1))
    tau2 = mixture_variance(1 / looks, alpha)
    mixture = np.mean((always_valid_p_value(sums / n, 1 / n, tau2) <= alpha).any(axis=1))
    assert naive > 0.15  # why any of this is needed
    assert 0.045 <= group <= 0.055
    assert 0.002 <= mixture <= alpha  # valid, and conservative with this few looks


def _comparison(lift=0.06, users=3000, seed=1):
    rng = np.random.default_rng(seed)
    shown_c, shown_t = rng.integers(5, 30, users), rng.integers(5, 30, users)
    return ratio_test("ctr", rng.binomial(shown_c, 0.10), shown_c, rng.binomial(shown_t, 0.10 * (1 + lift)), shown_t)


def test_always_valid_comparison_replaces_p_value_and_intervals_consistently():
    plain = _comparison()
    valid = always_valid_comparison(plain, planned_users=12_000)
    variance = plain.std_error**2
    tau2 = mixture_variance(variance * 6000 / 12_000)
    assert valid.p_value == pytest.approx(float(always_valid_p_value(plain.absolute_lift, variance, tau2)), rel=1e-12)
    radius = float(confidence_sequence_radius(variance, tau2))
    assert valid.absolute_ci == pytest.approx((plain.absolute_lift - radius, plain.absolute_lift + radius), rel=1e-12)
    assert valid.p_value > plain.p_value and valid.relative_ci[0] < plain.relative_ci[0]
    assert (valid.p_value < 0.05) == (valid.absolute_ci[0] > 0) == (valid.relative_ci[0] > 0)


def test_group_sequential_repeated_p_value_is_the_alpha_whose_boundary_this_look_reaches():
    plain = _comparison()
    earlier = [1000, 2000, 3000, 4000, 5000]
    judged = group_sequential_comparison(plain, planned_users=12_000, earlier_looks=earlier)
    fractions = np.array([*earlier, 6000]) / 12_000
    z = abs(plain.absolute_lift) / plain.std_error
    assert group_sequential_boundary(fractions, judged.p_value)[-1] == pytest.approx(z, rel=1e-6)
    boundary = group_sequential_boundary(fractions, 0.05)[-1]
    assert judged.absolute_ci == pytest.approx(
        (plain.absolute_lift - boundary * plain.std_error, plain.absolute_lift + boundary * plain.std_error), rel=1e-12
    )
    assert (judged.p_value < 0.05) == (z >= boundary) == (judged.absolute_ci[0] > 0)
    assert plain.p_value < judged.p_value


def test_group_sequential_inputs_are_checked():
    with pytest.raises(ValueError, match="increase within"):
        group_sequential_boundary([0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="cannot have more users"):
        group_sequential_comparison(_comparison(), planned_users=12_000, earlier_looks=[7000])
