"""Before starting: how many users an experiment needs, and the smallest lift it can detect.

Everything is for a two-sided test at ``alpha`` between the control and one treatment, with users split
by ``weights`` (control first, as in the experiment definition; with more than one treatment, alpha
is split across the treatments, Bonferroni, as spotify-confidence does). Sample sizes come from
spotify-confidence's ``SampleSizeCalculator``; power and minimum detectable effects from the exact
two-sided normal power, which also counts rejections in the wrong direction.

Ratio metrics such as CTR (clicks / shown, several impressions per user) are planned as a mean metric
whose per-user standard deviation is :func:`ratio_metric_sd` of historical per-user sums: impressions
of one user are not independent, so the binomial sqrt(p (1 - p)) per impression would promise too much.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from spotify_confidence import SampleSizeCalculator

from experiments.stats import RatioMoments


def sample_size_for_mean(
    baseline: float,
    sd: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> int:
    """Users in the whole experiment (all variants) for the test to detect a relative change of
    ``relative_mde`` from ``baseline`` in a metric whose per-user standard deviation is ``sd``."""
    return _spotify_sample_size(baseline, sd**2, False, relative_mde, alpha, power, weights)


def sample_size_for_proportion(
    baseline_rate: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> int:
    """Users in the whole experiment for the two-proportion z-test (one 0/1 outcome per user) to detect a
    relative change of ``relative_mde`` from ``baseline_rate``; the treatment's variance is taken at the
    changed rate."""
    if not 0 < baseline_rate < 1:
        raise ValueError(f"baseline_rate must be in (0, 1) (got {baseline_rate})")
    return _spotify_sample_size(
        baseline_rate, baseline_rate * (1 - baseline_rate), True, relative_mde, alpha, power, weights
    )


def power_for_mean(
    baseline: float,
    sd: float,
    relative_effect: float,
    users: int,
    alpha: float = 0.05,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """Probability that the test rejects when the true relative change is ``relative_effect``, with
    ``users`` in the whole experiment."""
    n_c, n_t = _arm_sizes(users, weights)
    return _power(relative_effect * baseline, sd * np.sqrt(1 / n_c + 1 / n_t), _per_comparison_alpha(alpha, weights))


def power_for_proportion(
    baseline_rate: float,
    relative_effect: float,
    users: int,
    alpha: float = 0.05,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """Power of the two-proportion z-test for a true relative change ``relative_effect``."""
    n_c, n_t = _arm_sizes(users, weights)
    se = _proportion_se(baseline_rate, relative_effect * baseline_rate, n_c, n_t)
    return _power(relative_effect * baseline_rate, se, _per_comparison_alpha(alpha, weights))


def mde_for_mean(
    baseline: float,
    sd: float,
    users: int,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """Smallest relative change the test detects with probability ``power`` given ``users``."""
    n_c, n_t = _arm_sizes(users, weights)
    se, alpha = sd * np.sqrt(1 / n_c + 1 / n_t), _per_comparison_alpha(alpha, weights)
    return _solve(lambda delta: _power(delta, se, alpha) - power, upper=50 * se) / baseline


def mde_for_proportion(
    baseline_rate: float,
    users: int,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """Smallest relative increase of ``baseline_rate`` the two-proportion z-test detects with
    probability ``power`` given ``users`` (decreases differ slightly: the variance depends on the rate)."""
    n_c, n_t = _arm_sizes(users, weights)
    alpha = _per_comparison_alpha(alpha, weights)

    def shortfall(delta: float) -> float:
        return _power(delta, _proportion_se(baseline_rate, delta, n_c, n_t), alpha) - power

    return _solve(shortfall, upper=1 - baseline_rate - 1e-12) / baseline_rate


def ratio_metric_sd(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """(ratio, per-user standard deviation) of a ratio metric from per-user sums, e.g. last month's
    clicks and impressions: the sd for which sd² / users is the ratio's delta-method variance."""
    moments = RatioMoments.of_users(num, den)
    return float(moments.ratio()), float(np.sqrt(moments.variance() * moments.n))


def _power(delta: float, se: float, alpha: float) -> float:
    z = stats.norm.ppf(1 - alpha / 2)
    drift = abs(delta) / se
    return float(stats.norm.sf(z - drift) + stats.norm.cdf(-z - drift))


def _proportion_se(rate: float, delta: float, n_c: float, n_t: float) -> float:
    changed = rate + delta
    return float(np.sqrt(rate * (1 - rate) / n_c + changed * (1 - changed) / n_t))


def _solve(shortfall, upper: float) -> float:
    if shortfall(upper) < 0:
        raise ValueError("no effect in range reaches the requested power: more users are needed")
    return float(optimize.brentq(shortfall, 1e-12 * upper, upper, xtol=1e-15, rtol=1e-12))


def _arm_sizes(users: int, weights: Sequence[float]) -> tuple[float, float]:
    """Users in the control and in (each) treatment."""
    if len(weights) < 2 or min(weights) <= 0:
        raise ValueError(f"weights need a positive share for the control and each treatment (got {list(weights)})")
    total = sum(weights)
    return users * weights[0] / total, users * weights[1] / total


def _per_comparison_alpha(alpha: float, weights: Sequence[float]) -> float:
    return alpha / (len(weights) - 1)


def _spotify_sample_size(
    baseline: float,
    variance: float,
    binary: bool,
    relative_mde: float,
    alpha: float,
    power: float,
    weights: Sequence[float],
) -> int:
    if relative_mde <= 0:
        raise ValueError(f"relative_mde must be positive (got {relative_mde})")
    plan = pd.DataFrame(
        {
            "metric": ["m"],
            "baseline": [baseline],
            "variance": [variance],
            "binary": [binary],
            "mde": [relative_mde],
            "nim": [None],
            "direction": [None],
        }
    )
    with warnings.catch_warnings():
        # spotify-confidence 4.1 uses pandas idioms that pandas 2.3 deprecates; nothing for us to fix
        warnings.simplefilter("ignore", FutureWarning)
        calculator = SampleSizeCalculator(
            plan,
            point_estimate_column="baseline",
            var_column="variance",
            is_binary_column="binary",
            metric_column="metric",
            interval_size=1 - alpha,
            power=power,
        )
        result = calculator.sample_size(
            treatment_weights=list(weights), mde_column="mde", nim_column="nim", preferred_direction_column="direction"
        )
    return int(result["required_sample_size_for_metric"].iloc[0])
