"""The promotion gate as a pure function: may a newly trained model replace the champion?

No MLflow, no Redis: :mod:`core.release` reads the metrics from the registry, asks this function and
records its answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    baseline: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    baseline: dict[str, float] | None,
    margin: float,
    champion_must_go: str | None = None,
) -> PromotionDecision:
    """The challenger must beat the popularity baseline and the current champion on ``metric`` by the
    relative ``margin`` (0.02 = 2% better). A challenger whose metric is missing or not a number never
    passes. ``champion_must_go`` (a reason, e.g. the champion was trained on data of a user erased
    since) lets a challenger that beats popularity replace the champion without beating it."""
    value = challenger.get(metric, float("nan"))
    champ = None if champion is None else champion.get(metric)
    base = None if baseline is None else baseline.get(metric)

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promoted, reason, metric, value, champ, base)

    if not isinstance(value, (int, float)) or math.isnan(value):
        return decision(False, f"{metric} is missing or not a number: nothing to compare")
    if base is not None and not value > base * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat popularity {base:.4f} by {margin:.0%}")
    if champ is not None and champion_must_go:
        return decision(True, f"{metric} {value:.4f} beats popularity; it replaces the champion ({champ:.4f}) because {champion_must_go}")
    if champ is not None and not value > champ * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat the champion's {champ:.4f} by {margin:.0%}")
    if champ is None:
        versus = "no popularity baseline" if base is None else f"popularity {base:.4f}"
        return decision(True, f"first model to pass the gate: {metric} {value:.4f} vs {versus}")
    return decision(True, f"{metric} {value:.4f} beats the champion's {champ:.4f} by more than {margin:.0%}")
