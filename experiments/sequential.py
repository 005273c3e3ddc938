"""Sequential tests: p-values and intervals that stay honest when reviewers look at the results every day.

Two designs, both fed by the estimate and standard error of an ordinary :class:`Comparison`:

* **Mixture SPRT** (always valid; Johari, Koomen, Pekelis & Walsh 2017, "Peeking at A/B tests";
  Howard, Ramdas, McAuliffe & Sekhon 2021, normal-mixture confidence sequences). Valid however often
  and however long one looks, with no planned end; the price is width: at the planned sample size its
  interval is about 1.55 times the fixed-horizon one (alpha 0.05), and with a couple of weeks of daily
  looks its false positive rate is well below alpha.
* **Group sequential** (Lan-DeMets alpha spending, alpha · t² where t = users so far / planned users,
  boundaries from spotify-confidence's port of R's ``ldbounds``). Spends exactly alpha by the planned
  sample size over any schedule of looks, so it keeps almost all the power of a fixed-horizon test; it
  needs the planned sample size and the sizes of all earlier looks.

For the mixture, with estimate θ̂ of variance V and mixing variance τ² (the spread of effects the test
is tuned for), the likelihood ratio of "effect ~ N(0, τ²)" against "no effect" is
``Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))``; ``1 / Λ`` is an always-valid p-value and
``θ̂ ± sqrt(V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)))`` the matching confidence sequence.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from spotify_confidence.analysis.frequentist.sequential_bound_solver import bounds

from experiments.stats import Comparison

# Lan-DeMets power-family spending exponent: spotify-confidence's choice, close to O'Brien-Fleming
# (little alpha early, when estimates are noisy) while still able to stop early on large effects
SPENDING_EXPONENT = 2
# repeated p-values below this are reported as this: the boundary solver truncates |z| at 8
SMALLEST_REPEATED_P = 1e-10


def mixture_variance(planned_variance, alpha: float = 0.05):
    """Mixing variance τ² that makes the confidence sequence narrowest when the estimate's variance is
    ``planned_variance`` (its variance at the planned sample size): τ² = s · V where s solves
    s = 2 log(1/α) + log(1 + s) (about 8.2 at alpha 0.05)."""
    two_log = 2 * np.log(1 / alpha)
    s = optimize.brentq(lambda s: s - two_log - np.log1p(s), 1e-9, 1e6)
    return s * np.asarray(planned_variance, dtype=np.float64)


def always_valid_p_value(estimate, variance, tau2):
    """Mixture-SPRT p-value 1 / Λ (capped at 1) for "no difference", elementwise over arrays. Over a
    series of looks take the running minimum (``np.minimum.accumulate``): it is valid too."""
    estimate, variance, tau2 = (np.asarray(a, dtype=np.float64) for a in (estimate, variance, tau2))
    log_lr = 0.5 * np.log(variance / (variance + tau2)) + tau2 * estimate**2 / (2 * variance * (variance + tau2))
    return np.exp(-np.maximum(log_lr, 0.0))


def confidence_sequence_radius(variance, tau2, alpha: float = 0.05):
    """Half-width of the mixture confidence sequence for an estimate of variance ``variance``."""
    variance, tau2 = np.asarray(variance, dtype=np.float64), np.asarray(tau2, dtype=np.float64)
    return np.sqrt(variance * (variance + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((variance + tau2) / variance)))


def group_sequential_boundary(information_fractions: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Two-sided |z| boundaries of the Lan-DeMets alpha · t² design at the given looks (increasing
    shares of the planned sample size, each in (0, 1]): the test rejects at the first look whose |z|
    reaches its boundary. By the planned size the chance of ever rejecting a true null is alpha."""
    t = np.asarray(information_fractions, dtype=np.float64)
    if t.ndim != 1 or not len(t) or t[0] <= 0 or t[-1] > 1 or np.any(np.diff(t) <= 0):
        raise ValueError(f"information fractions must increase within (0, 1] (got {t.tolist()})")
    with warnings.catch_warnings():
        # spotify-confidence 4.1 uses pandas idioms that pandas 2.3 deprecates; nothing for us to fix
        warnings.simplefilter("ignore", FutureWarning)
        result = bounds(t, alpha, rho=SPENDING_EXPONENT, ztrun=8, sides=2, max_nints=1000)
    return result.df["zb"].to_numpy(dtype=np.float64)


def always_valid_comparison(comparison: Comparison, planned_users: int, alpha: float = 0.05) -> Comparison:
    """The comparison at this look made always valid: the p-value becomes the mixture-SPRT p-value and
    both intervals become confidence sequences. ``planned_users``: users in the two compared variants at
    the planned end (from the power calculation), which tunes τ²; it is no stopping rule."""
    _check_standard_error(comparison)
    users = comparison.n_control + comparison.n_treatment
    variance = comparison.std_error**2
    tau2 = mixture_variance(variance * users / planned_users, alpha)  # variance shrinks as 1 / users
    p = float(always_valid_p_value(comparison.absolute_lift, variance, tau2))
    radius = float(confidence_sequence_radius(variance, tau2, alpha))
    # the same multiple of the standard error on the log scale, whose variance also shrinks as 1 / users
    multiplier = radius / comparison.std_error
    return _with_intervals(comparison, p, multiplier, "always-valid mixture SPRT")


def group_sequential_comparison(
    comparison: Comparison, planned_users: int, earlier_looks: Sequence[int] = (), alpha: float = 0.05
) -> Comparison:
    """The comparison at this look judged by the group-sequential design: the p-value becomes the
    repeated p-value (the smallest alpha whose boundary this look's |z| reaches, so p < alpha exactly when
    the design rejects) and the intervals become repeated confidence intervals (estimate ± boundary · se).
    ``earlier_looks``: users in the two compared variants at each earlier look; ``planned_users``: at the
    planned end. Past the planned size the design is recomputed as if the current size had been planned,
    which overspends alpha a little: plan the size generously rather than overrun it."""
    _check_standard_error(comparison)
    users = comparison.n_control + comparison.n_treatment
    if any(n > users for n in earlier_looks):
        raise ValueError(f"earlier looks {list(earlier_looks)} cannot have more users than this look ({users})")
    looks = np.unique([*earlier_looks, users]).astype(np.float64)  # a look without new users spends nothing
    fractions = looks / max(planned_users, users)
    z = abs(comparison.absolute_lift) / comparison.std_error

    def margin(a: float) -> float:
        return group_sequential_boundary(fractions, a)[-1] - z

    if margin(SMALLEST_REPEATED_P) <= 0:
        p = SMALLEST_REPEATED_P
    elif margin(1 - 1e-9) > 0:
        p = 1.0
    else:
        p = float(optimize.brentq(margin, SMALLEST_REPEATED_P, 1 - 1e-9, xtol=1e-12, rtol=1e-10))
    boundary = float(group_sequential_boundary(fractions, alpha)[-1])
    return _with_intervals(
        comparison, p, boundary, f"group sequential (alpha·t^{SPENDING_EXPONENT}, look {len(looks)})"
    )


def _check_standard_error(comparison: Comparison) -> None:
    if not comparison.std_error > 0:
        raise ValueError(
            f"{comparison.metric}: no standard error to work from (std_error={comparison.std_error}); "
            "compute the comparison with experiments.stats from at least 2 varying users per variant"
        )


def _with_intervals(comparison: Comparison, p_value: float, multiplier: float, method: str) -> Comparison:
    """The comparison with a new p-value and intervals of ``multiplier`` standard errors."""
    diff, se = comparison.absolute_lift, comparison.std_error
    rel_ci = (float("nan"), float("nan"))
    if np.isfinite(comparison.log_ratio_std_error):
        log_ratio, log_se = np.log1p(comparison.relative_lift), comparison.log_ratio_std_error
        rel_ci = (float(np.expm1(log_ratio - multiplier * log_se)), float(np.expm1(log_ratio + multiplier * log_se)))
    return dataclasses.replace(
        comparison,
        p_value=p_value,
        absolute_ci=(diff - multiplier * se, diff + multiplier * se),
        relative_ci=rel_ci,
        method=f"{comparison.method}, {method}",
        adjusted_p_value=None,
    )
