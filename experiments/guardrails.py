"""Guardrail verdicts: a guardrail metric (skip rate, latency, errors) breaches when the treatment makes
it significantly worse in the harmful direction.

The test is one-sided, because only harm matters, and at the full alpha without correction for the
number of guardrails, because missing harm costs more than a false alarm. With a ``margin`` it is a
non-inferiority test: harm up to ``margin`` (relative to the control) is tolerated, and the verdict also
says whether harm beyond the margin has been ruled out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from experiments.stats import Comparison


@dataclass(frozen=True)
class GuardrailVerdict:
    metric: str
    variant: str
    breached: bool  # significantly worse than the tolerated margin
    ruled_out: bool  # harm beyond the margin is significantly excluded (non-inferiority shown)
    harm: float  # relative change in the harmful direction (+0.03 = 3% worse)
    margin: float
    p_value: float  # one-sided, against "harm is at most the margin"
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def guardrail_verdict(
    comparison: Comparison, lower_is_better: bool, alpha: float = 0.05, margin: float = 0.0
) -> GuardrailVerdict:
    """Judge one guardrail comparison. ``lower_is_better``: the metric is harmful when it rises (skip
    rate, latency); ``margin``: tolerated harm as a share of the control's value (0.02 = 2% worse is
    acceptable). Uses the comparison's estimate and standard error (normal approximation)."""
    if margin < 0:
        raise ValueError(f"margin is a tolerated harm and cannot be negative (got {margin})")
    c = comparison
    direction = 1.0 if lower_is_better else -1.0
    harm_abs = direction * c.absolute_lift
    tolerated = margin * abs(c.control)
    se = c.std_error
    if not se > 0:
        raise ValueError(f"{c.metric}: the comparison has no standard error; compute it with experiments.stats")
    p_value = float(stats.norm.sf((harm_abs - tolerated) / se))
    ruled_out = bool(stats.norm.cdf((harm_abs - tolerated) / se) < alpha)
    harm = direction * c.relative_lift if np.isfinite(c.relative_lift) else float("nan")
    breached = p_value < alpha
    worse = "rose" if lower_is_better else "fell"
    if breached:
        reason = f"guardrail {c.metric} {worse} in {c.variant or 'treatment'}: {c.control:.4g} -> {c.treatment:.4g} ({harm:+.1%} harm, one-sided p={p_value:.2g})"
    elif ruled_out:
        reason = f"guardrail {c.metric} holds in {c.variant or 'treatment'}: harm beyond {margin:.1%} ruled out"
    else:
        reason = f"guardrail {c.metric} in {c.variant or 'treatment'}: no significant harm ({harm:+.1%}, one-sided p={p_value:.2g})"
    return GuardrailVerdict(c.metric, c.variant, breached, ruled_out, harm, margin, p_value, reason)
