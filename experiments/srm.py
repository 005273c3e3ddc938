"""Sample ratio mismatch: are users split across variants the way the experiment says?

A split that misses the configured weights by more than chance (a bot hitting one variant, a variant
that crashes before logging its exposure, a cache that serves stale assignments) means the variants no
longer hold comparable users, and no metric difference between them can be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

# conventional: strict enough that a healthy experiment is flagged 1 time in 1,000
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SampleRatioCheck:
    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    p_value: float
    mismatch: bool

    def as_dict(self) -> dict:
        return asdict(self)


def sample_ratio_check(
    users: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatioCheck:
    """Pearson chi-square goodness of fit of the users per variant (``users``: variant -> count) against
    the configured ``weights`` (variant -> share; a variant with no users counts 0). ``mismatch`` is set
    when the p-value is below ``threshold``."""
    unknown = sorted(set(users) - set(weights))
    if unknown:
        raise ValueError(f"users in variants {unknown} that the experiment does not define ({', '.join(weights)})")
    names = list(weights)
    observed = np.array([users.get(name, 0) for name in names], dtype=np.float64)
    shares = np.array([weights[name] for name in names], dtype=np.float64)
    if observed.sum() == 0:
        raise ValueError("no users in any variant yet: nothing to check")
    expected = observed.sum() * shares / shares.sum()
    # scipy's survival function keeps tiny p-values, where 1 - cdf (spotify-confidence) rounds them to 0
    chi_square, p_value = stats.chisquare(observed, expected)
    return SampleRatioCheck(
        observed={n: int(o) for n, o in zip(names, observed, strict=True)},
        expected={n: float(e) for n, e in zip(names, expected, strict=True)},
        chi_square=float(chi_square),
        p_value=float(p_value),
        mismatch=bool(p_value < threshold),
    )
