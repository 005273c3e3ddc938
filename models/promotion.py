"""The promotion gate as a pure function: may a newly trained model replace the champion?

No MLflow, no Redis: :mod:`core.release` reads the metrics from the registry, asks this function and
records its answer.

Like with like: the challenger and the champion are compared on the same held-out pairs, which
neither trained on (:func:`models.evaluation.head_to_head`: the champion through its fold-in), whenever
the champion could be scored there. Its metric logged when it was trained was measured on an older
split of older data: after a shift in taste a retrained model scored 0.1249 NDCG@10 on its split against
the champion's logged 0.1628 and was rejected, although it was the model that followed the listeners
(issue 21). The logged figure is the fallback, and is recorded either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# where the champion's figure was measured: on the same pairs as the challenger's, in its own training run, or no champion
SAME_SPLIT, LOGGED, NO_CHAMPION = "same_split", "logged", "none"


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger: float  # the challenger's metric on its whole held-out split (what popularity is compared with)
    champion: float | None  # the champion's metric the challenger was compared with
    baseline: float | None
    champion_logged: float | None = None  # the champion's metric logged when it was trained (its own split)
    compared_on: str = NO_CHAMPION  # SAME_SPLIT, LOGGED or NO_CHAMPION: where ``champion`` was measured
    challenger_compared: float | None = (
        None  # the challenger's figure set against ``champion`` (on the same pairs, or ``challenger``)
    )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    baseline: dict[str, float] | None,
    margin: float,
    champion_must_go: str | None = None,
    head_to_head: tuple[dict[str, float], dict[str, float]] | None = None,
) -> PromotionDecision:
    """The challenger must beat the popularity baseline and the current champion on ``metric`` by the
    relative ``margin`` (0.02 = 2% better). A challenger whose metric is missing or not a number never
    passes. ``challenger`` and ``baseline``: metrics on the challenger's held-out split. ``head_to_head``:
    (challenger's, champion's) metrics on the same held-out pairs, compared when both are numbers;
    otherwise ``champion`` (the champion's metrics logged when it was trained) is compared with
    ``challenger``. ``champion_must_go`` (a reason, e.g. the champion was trained on data of a user
    erased since) lets a challenger that beats popularity replace the champion without beating it."""
    value = challenger.get(metric, float("nan"))
    logged = None if champion is None else champion.get(metric)
    mine, theirs = (None, None) if head_to_head is None else (head_to_head[0].get(metric), head_to_head[1].get(metric))
    same_split = champion is not None and _number(mine) and _number(theirs)
    ours, champ = (mine, theirs) if same_split else (value, logged)
    base = None if baseline is None else baseline.get(metric)
    if same_split:
        where = f"on the same held-out pairs, which neither trained on ({metric} {value:.4f} on its whole split"
        where += f"; the champion's logged at its training: {logged:.4f})" if _number(logged) else ")"
    else:
        where = "logged at its training, on its own split (it could not be scored on this one)"
    compared_on = SAME_SPLIT if same_split else LOGGED if champ is not None else NO_CHAMPION

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(
            promoted, reason, metric, value, champ, base, logged, compared_on, ours if champ is not None else None
        )

    if not _number(value):
        return decision(False, f"{metric} is missing or not a number: nothing to compare")
    if base is not None and not value > base * (1 + margin):
        return decision(False, f"{metric} {value:.4f} does not beat popularity {base:.4f} by {margin:.0%}")
    if champ is not None and champion_must_go:
        return decision(
            True,
            f"{metric} {value:.4f} beats popularity; it replaces the champion ({champ:.4f} vs {ours:.4f} {where}) because {champion_must_go}",
        )
    if champ is not None and not ours > champ * (1 + margin):
        return decision(False, f"{metric} {ours:.4f} does not beat the champion's {champ:.4f} by {margin:.0%}, {where}")
    if champ is None:
        versus = "no popularity baseline" if base is None else f"popularity {base:.4f}"
        return decision(True, f"first model to pass the gate: {metric} {value:.4f} vs {versus}")
    return decision(True, f"{metric} {ours:.4f} beats the champion's {champ:.4f} by more than {margin:.0%}, {where}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)
