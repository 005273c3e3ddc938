"""Statistics for comparing a treatment variant with the control: the delta-method z-test for ratio
metrics, Welch's t-test for per-user means and the two-proportion z-test, each with confidence
intervals for the absolute lift (treatment - control) and the relative lift (treatment / control - 1).

Relative intervals come from the delta method on the log scale, log(treatment / control), which
counts the control's own noise; spotify-confidence divides the absolute interval by the control mean
as if that mean were known, which is too narrow once lifts are large.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats
from spotify_confidence import StudentsTTest, ZTest


@dataclass
class Comparison:
    """Treatment against control on one metric. Intervals are two-sided at the test's alpha;
    ``std_error`` is the standard error of the absolute lift and ``log_ratio_std_error`` that of
    log(treatment / control), from which sequential tests and guardrails build their own intervals.
    ``adjusted_p_value`` is filled in by :func:`experiments.multiple_testing.adjust_comparisons`."""

    metric: str
    control: float
    treatment: float
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float
    relative_ci: tuple[float, float]
    p_value: float
    n_control: int
    n_treatment: int
    variant: str = ""
    std_error: float = float("nan")
    log_ratio_std_error: float = float("nan")
    method: str = ""
    adjusted_p_value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RatioMoments:
    """Sufficient statistics of a ratio metric (sum of numerators / sum of denominators) over a set of
    users: the user count and the sums of num, den, num², den² and num·den over users. Fields are
    floats or arrays of one shape (one entry per simulated experiment, per look, ...); the moments of
    disjoint sets of users add up, so daily moments accumulate into looks with ``np.cumsum``."""

    n: np.ndarray
    num: np.ndarray
    den: np.ndarray
    num_sq: np.ndarray
    den_sq: np.ndarray
    num_den: np.ndarray

    @classmethod
    def of_users(cls, num, den, axis: int = -1) -> RatioMoments:
        """Moments of per-user sums ``num`` and ``den`` (equal-shaped arrays; users along ``axis``)."""
        num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        if num.shape != den.shape:
            raise ValueError(f"num and den must have one value per user (shapes {num.shape} and {den.shape})")
        return cls(
            n=np.sum(np.ones_like(num), axis=axis),
            num=num.sum(axis=axis),
            den=den.sum(axis=axis),
            num_sq=(num * num).sum(axis=axis),
            den_sq=(den * den).sum(axis=axis),
            num_den=(num * den).sum(axis=axis),
        )

    def ratio(self) -> np.ndarray:
        """The metric: sum(num) / sum(den)."""
        return self.num / self.den

    def variance(self) -> np.ndarray:
        """Delta-method variance of the ratio: the sample variance of the per-user residuals
        num - ratio·den (which sum to zero), divided by n·mean(den)²."""
        ratio, mean_den = self.ratio(), self.den / self.n
        residual_sq = self.num_sq - 2 * ratio * self.num_den + ratio**2 * self.den_sq
        return np.maximum(residual_sq, 0.0) / (self.n - 1) / self.n / mean_den**2


def compare_ratios(metric: str, control: RatioMoments, treatment: RatioMoments, alpha: float = 0.05) -> Comparison:
    """Delta-method z-test of treatment against control on a ratio metric given the two variants'
    :class:`RatioMoments` (scalar fields), with intervals at level 1 - ``alpha``."""
    return normal_comparison(
        metric,
        (float(control.ratio()), float(control.variance()), int(control.n)),
        (float(treatment.ratio()), float(treatment.variance()), int(treatment.n)),
        alpha,
        method="delta-method z-test",
    )


def ratio_test(
    metric: str, num_c: np.ndarray, den_c: np.ndarray, num_t: np.ndarray, den_t: np.ndarray, alpha: float = 0.05
) -> Comparison:
    """Difference of two ratio metrics from per-user sums (``num_*``, ``den_*``: one value per user;
    ``den = 1`` gives a plain per-user mean) by the delta method with a normal approximation, with
    absolute and relative (log-scale delta method) confidence intervals."""
    return compare_ratios(metric, RatioMoments.of_users(num_c, den_c), RatioMoments.of_users(num_t, den_t), alpha)


def normal_comparison(
    metric: str, control: tuple[float, float, int], treatment: tuple[float, float, int], alpha: float, method: str
) -> Comparison:
    """Two-sided z-test and intervals from each variant's (estimate, variance of the estimate, users)."""
    (rc, vc, nc), (rt, vt, nt) = control, treatment
    diff, se = rt - rc, float(np.sqrt(vc + vt))
    if se > 0:
        p = float(2 * stats.norm.sf(abs(diff) / se))
    else:  # no spread at all: any difference is certain, none is no evidence
        p = 0.0 if diff != 0 else 1.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    rel, rel_ci, log_se = relative_interval(rc, vc, rt, vt, z)
    return Comparison(
        metric,
        rc,
        rt,
        diff,
        (diff - z * se, diff + z * se),
        rel,
        rel_ci,
        p,
        nc,
        nt,
        std_error=se,
        log_ratio_std_error=log_se,
        method=method,
    )


def relative_interval(
    control: float, control_var: float, treatment: float, treatment_var: float, critical: float
) -> tuple[float, tuple[float, float], float]:
    """Relative lift treatment / control - 1, its interval exp(log ratio ± critical · se) - 1 and the
    standard error of the log ratio (delta method); NaNs when either estimate is not positive."""
    if control <= 0 or treatment <= 0:
        return (treatment / control - 1 if control else float("nan")), (float("nan"), float("nan")), float("nan")
    log_ratio = float(np.log(treatment / control))
    log_se = float(np.sqrt(control_var / control**2 + treatment_var / treatment**2))
    lo, hi = np.exp(log_ratio - critical * log_se) - 1, np.exp(log_ratio + critical * log_se) - 1
    return treatment / control - 1, (float(lo), float(hi)), log_se


def mean_test(metric: str, values_c: np.ndarray, values_t: np.ndarray, alpha: float = 0.05) -> Comparison:
    """Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom) of per-user values of
    the treatment against the control, computed by spotify-confidence's ``StudentsTTest``. The relative
    interval uses the same t critical value as the absolute one."""
    values_c, values_t = np.asarray(values_c, dtype=np.float64), np.asarray(values_t, dtype=np.float64)
    if np.isin(values_c, (0.0, 1.0)).all() and np.isin(values_t, (0.0, 1.0)).all():
        # spotify-confidence would silently switch to the binomial variance p(1 - p)
        raise ValueError(f"{metric}: per-user values are all 0 or 1, which is a proportion: use proportion_test")
    sums = [(float(v.sum()), float((v * v).sum()), len(v)) for v in (values_c, values_t)]
    return _spotify_comparison(StudentsTTest, metric, sums, alpha, "Welch t-test")


def proportion_test(
    metric: str, successes_c: int, trials_c: int, successes_t: int, trials_t: int, alpha: float = 0.05
) -> Comparison:
    """Two-proportion z-test (Wald: each variant's own variance p(1 - p)) of successes / trials, computed
    by spotify-confidence's ``ZTest``. The same standard error makes the p-value and the interval, so
    "significant" and "the interval excludes 0" never disagree. Trials must be independent (one per
    user); clicks per impression with several impressions per user are a ratio metric: use ratio_test."""
    counts = {"control": (successes_c, trials_c), "treatment": (successes_t, trials_t)}
    for name, (successes, trials) in counts.items():
        if not 0 <= successes <= trials or trials < 1:
            raise ValueError(
                f"{metric}: {name} has {successes} successes in {trials} trials; need 0 <= successes <= trials, trials >= 1"
            )
    sums = [(float(s), float(s), int(n)) for s, n in counts.values()]  # 0/1 outcomes: sum of squares = sum
    return _spotify_comparison(ZTest, metric, sums, alpha, "two-proportion z-test")


def _spotify_comparison(
    test_class, metric: str, sums: list[tuple[float, float, int]], alpha: float, method: str
) -> Comparison:
    """Run a spotify-confidence test on (sum, sum of squares, count) of the control and the treatment."""
    frame = pd.DataFrame(sums, columns=["total", "total_sq", "users"]).assign(variant=["control", "treatment"])
    with warnings.catch_warnings():
        # spotify-confidence 4.1 uses pandas idioms that pandas 2.3 deprecates; nothing for us to fix
        warnings.simplefilter("ignore", FutureWarning)
        test = test_class(
            frame,
            numerator_column="total",
            numerator_sum_squares_column="total_sq",
            denominator_column="users",
            categorical_group_columns="variant",
            interval_size=1 - alpha,
        )
        row = test.difference(level_1="control", level_2="treatment", verbose=True).iloc[0]
    rc, rt, se = float(row["point_estimate_1"]), float(row["point_estimate_2"]), float(row["std_err"])
    diff, lo, hi = float(row["difference"]), float(row["ci_lower"]), float(row["ci_upper"])
    critical = (hi - diff) / se if se > 0 else float(stats.norm.ppf(1 - alpha / 2))
    (_, _, nc), (_, _, nt) = sums
    vc, vt = float(row["variance_1"]) / nc, float(row["variance_2"]) / nt
    rel, rel_ci, log_se = relative_interval(rc, vc, rt, vt, critical)
    return Comparison(
        metric,
        rc,
        rt,
        diff,
        (lo, hi),
        rel,
        rel_ci,
        float(row["p-value"]),
        nc,
        nt,
        std_error=se,
        log_ratio_std_error=log_se,
        method=method,
    )
