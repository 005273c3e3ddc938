"""The promotion gate as a pure function: may a newly trained model replace the champion?

No MLflow, no Redis: :mod:`core.release` reads the metrics from the registry, asks this function and
records its answer.

Like with like: the champion is judged on the challenger's held-out data (scored through its fold-in,
:mod:`models.evaluation.incumbent`) whenever it could be. Its metric logged when it was trained was
measured on an older split of older data, and is a different question: after a shift in taste a
retrained model scored 0.1249 NDCG@10 on the new split against the champion's logged 0.1628, and was
rejected although it was the model that followed the listeners (issue 21).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# where the champion's figure was measured: the challenger's held-out data, its own training run, or no champion
SAME_SPLIT, LOGGED, NO_CHAMPION = "same_split", "logged", "none"


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None  # the champion's metric the challenger was compared with
    baseline: float | None
    champion_logged: float | None = None  # the champion's metric logged when it was trained (another split)
    compared_on: str = NO_CHAMPION  # SAME_SPLIT, LOGGED or NO_CHAMPION: where ``champion`` was measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    baseline: dict[str, float] | None,
    margin: float,
    champion_must_go: str | None = None,
    champion_on_same_split: dict[str, float] | None = None,
) -> PromotionDecision:
    """The challenger must beat the popularity baseline and the current champion on ``metric`` by the
    relative ``margin`` (0.02 = 2% better). A challenger whose metric is missing or not a number never
    passes. ``champion``: the champion's metrics logged when it was trained; ``champion_on_same_split``:
    its metrics on the challenger's held-out data, compared instead when given (both are recorded).
    ``champion_must_go`` (a reason, e.g. the champion was trained on data of a user erased since) lets a
    challenger that beats popularity replace the champion without beating it."""
    value = challenger.get(metric, float("nan"))
    logged = None if champion is None else champion.get(metric)
    same = None if champion_on_same_split is None else champion_on_same_split.get(metric)
    same_split = isinstance(same, (int, float)) and not math.isnan(same)
    champ = same if same_split else logged
    base = None if baseline is None else baseline.get(metric)
    where = " on the same held-out data" if same_split else ""
    if same_split and logged is not None:
        where += f" (logged at its training, on its own split: {logged:.4f})"
    elif not same_split and champ is not None:
        where = " (its metric logged at its training, on another split: it could not be scored on this one)"

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        compared_on = SAME_SPLIT if same_split else LOGGED if champ is not None else NO_CHAMPION
        return PromotionDecision(promoted, reason, metric, value, champ, base, logged, compared_on)

    if not isinstance(value, (int, float)) or math.isnan(value):
        return decision(False, f"{metric} is missing or not a number: nothing to compare")
    if base is not None and not value > base * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat popularity {base:.4f} by {margin:.0%}")
    if champ is not None and champion_must_go:
        return decision(True, f"{metric} {value:.4f} beats popularity; it replaces the champion ({champ:.4f}) because {champion_must_go}")
    if champ is not None and not value > champ * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat the champion's {champ:.4f} by {margin:.0%}{where}")
    if champ is None:
        versus = "no popularity baseline" if base is None else f"popularity {base:.4f}"
        return decision(True, f"first model to pass the gate: {metric} {value:.4f} vs {versus}")
    return decision(True, f"{metric} {value:.4f} beats the champion's {champ:.4f} by more than {margin:.0%}{where}")
