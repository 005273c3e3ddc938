"""Correcting p-values when one experiment is judged on several metrics (and several treatments).

Test the success metrics (primary and secondary, every treatment against the control) as one family.
Holm-Bonferroni keeps the chance of any false "significant" in the family at alpha; Benjamini-Hochberg
keeps the expected share of false discoveries among the "significant" ones at alpha, which is less
strict when many metrics move. Guardrails are better left uncorrected: correcting them makes harm
harder to see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from statsmodels.stats.multitest import multipletests

from experiments.stats import Comparison

# our names -> statsmodels' names
METHODS = {"holm": "holm", "benjamini-hochberg": "fdr_bh"}


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values in the input order ("holm" or "benjamini-hochberg"); a hypothesis is rejected
    at level alpha when its adjusted p-value is below alpha."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; known: {', '.join(METHODS)}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"p-values must be a list of numbers in [0, 1] (got {p.tolist()})")
    if not len(p):
        return p
    return multipletests(p, method=METHODS[method])[1]


def adjust_comparisons(comparisons: Sequence[Comparison], method: str = "holm") -> list[Comparison]:
    """The comparisons, in order, with ``adjusted_p_value`` set for the family they form together."""
    adjusted = adjust_p_values([c.p_value for c in comparisons], method)
    return [dataclasses.replace(c, adjusted_p_value=float(a)) for c, a in zip(comparisons, adjusted, strict=True)]
