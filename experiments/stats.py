"""Statistics for comparing a treatment variant with the control."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Comparison:
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

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio_and_variance(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Ratio of means and its delta-method variance (per-user sums num, den)."""
    n = len(num)
    mx, my = num.mean(), den.mean()
    vx, vy = num.var(ddof=1), den.var(ddof=1)
    cxy = np.cov(num, den, ddof=1)[0, 1]
    ratio = mx / my
    var = (vx / my**2 - 2 * mx * cxy / my**3 + mx**2 * vy / my**4) / n
    return float(ratio), float(var)


def ratio_test(
    metric: str, num_c: np.ndarray, den_c: np.ndarray, num_t: np.ndarray, den_t: np.ndarray, alpha: float = 0.05
) -> Comparison:
    """Difference of two ratio metrics (delta method, normal approximation) with absolute and relative
    (ratio of ratios, delta method on the log scale) confidence intervals."""
    rc, vc = _ratio_and_variance(np.asarray(num_c, float), np.asarray(den_c, float))
    rt, vt = _ratio_and_variance(np.asarray(num_t, float), np.asarray(den_t, float))
    z = stats.norm.ppf(1 - alpha / 2)
    diff, se = rt - rc, np.sqrt(vc + vt)
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (0.0 if diff != 0 else 1.0)
    log_se = np.sqrt(vc / rc**2 + vt / rt**2) if rc > 0 and rt > 0 else np.nan
    rel = rt / rc - 1 if rc else np.nan
    rel_ci = (float(np.exp(np.log(rt / rc) - z * log_se) - 1), float(np.exp(np.log(rt / rc) + z * log_se) - 1)) if np.isfinite(log_se) else (np.nan, np.nan)
    return Comparison(metric, rc, rt, diff, (diff - z * se, diff + z * se), float(rel), rel_ci, p, len(num_c), len(num_t))
