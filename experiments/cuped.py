"""CUPED: less variance from a pre-experiment covariate (Deng, Xu, Kohavi & Walker, WSDM 2013).

Each user's metric y is replaced by y - theta · (x - mean x), where x is measured before the user
entered the experiment (last month's clicks, last month's CTR, ...). Because x cannot be moved by the
treatment, the adjusted difference between variants stays unbiased, and its variance shrinks by the
factor 1 - corr(y, x)².

theta is the slope of y on x pooled within variants (the centred cross products of both variants over
their centred squares), so a treatment effect on the mean of y does not leak into theta; the adjusted
difference then equals the treatment coefficient of the regression y ~ variant + x.

Ratio metrics (CTR = clicks / shown) are first linearised per user (delta method): user i of a variant
with ratio r and mean denominator d̄ contributes r + (num_i - r · den_i) / d̄, whose mean is r and whose
sample variance over n is the delta-method variance. spotify-confidence's ``ZTestLinreg`` adjusts plain
means only, so it cannot serve ratio metrics.
"""

from __future__ import annotations

import numpy as np

from experiments.stats import Comparison, normal_comparison


def cuped_theta(y_c: np.ndarray, x_c: np.ndarray, y_t: np.ndarray, x_t: np.ndarray) -> float:
    """Slope of the per-user metric y on the covariate x, pooled within the two variants."""
    pairs = [(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)) for y, x in ((y_c, x_c), (y_t, x_t))]
    cross = sum(float(np.dot(y - y.mean(), x - x.mean())) for y, x in pairs)
    spread = sum(float(np.dot(x - x.mean(), x - x.mean())) for _, x in pairs)
    if spread == 0:
        raise ValueError("the pre-experiment covariate is the same for every user, so it cannot explain any variance")
    return cross / spread


def linearised_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per-user values whose mean is the ratio sum(num) / sum(den) and whose variance of the mean is the
    delta-method variance of that ratio."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    ratio, mean_den = num.sum() / den.sum(), den.mean()
    return ratio + (num - ratio * den) / mean_den


def cuped_ratio_test(
    metric: str,
    num_c: np.ndarray,
    den_c: np.ndarray,
    pre_c: np.ndarray,
    num_t: np.ndarray,
    den_t: np.ndarray,
    pre_t: np.ndarray,
    alpha: float = 0.05,
) -> Comparison:
    """CUPED-adjusted delta-method z-test. ``num_*``, ``den_*``: per-user sums during the experiment as
    for :func:`experiments.stats.ratio_test` (``den = 1`` for a plain mean); ``pre_*``: each user's
    covariate from before the experiment (0 for users with no history is fine: any value fixed before
    assignment keeps the estimate unbiased). ``control`` and ``treatment`` in the result are the adjusted
    metric values; ``method`` records theta."""
    y_c, y_t = linearised_ratio(num_c, den_c), linearised_ratio(num_t, den_t)
    x_c, x_t = np.asarray(pre_c, dtype=np.float64), np.asarray(pre_t, dtype=np.float64)
    if x_c.shape != y_c.shape or x_t.shape != y_t.shape:
        raise ValueError("pre_c and pre_t need one covariate value per user, like num and den")
    theta = cuped_theta(y_c, x_c, y_t, x_t)
    x_mean = np.concatenate([x_c, x_t]).mean()
    adjusted = [y - theta * (x - x_mean) for y, x in ((y_c, x_c), (y_t, x_t))]
    control, treatment = ((float(a.mean()), float(a.var(ddof=1) / len(a)), len(a)) for a in adjusted)
    return normal_comparison(metric, control, treatment, alpha, method=f"CUPED delta-method z-test (theta={theta:.6g})")
