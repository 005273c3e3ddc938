"""``summary.json`` as strict JSON: every undefined value of an analysis (NaN, e.g. a relative lift over
a control rate of 0, or a None that stands for "not computable") is written as ``null``, and the
top-level ``nulls`` map gives the reason for each, keyed by the value's JSON pointer
(``{"/primary/0/relative_lift": "the control's value is 0 ..."}``). The same rules for both designs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.metrics import RATIO_METRICS

# why a value of the analysis can be undefined, by its field name
_UNDEFINED = {
    "relative_lift": "the control's value is 0, so a relative change is undefined",
    "relative_ci": "a relative interval needs both variants' values above 0",
    "log_ratio_std_error": "a relative interval needs both variants' values above 0",
    "harm": "the control's value is 0, so a relative harm is undefined",
    "per_user_sd": "too few control users with exposures to estimate a spread",
    "mde_at_current_size": "the control's per-user values do not vary: no power calculation",
    "users_for_5pct_lift": "the control's per-user values do not vary: no power calculation",
    "boundary_lift": "the control's value is 0, so no relative lift corresponds to the boundary",
    "start": "no start date: every event before the end counts",
    "end": "no end date: every event from the start on counts",
    # interleaving (experiments.interleaving.preference)
    "share_b": "no user prefers either ranker yet (no user has more credited clicks for one of them)",
    "share_b_ci": "no user prefers either ranker yet (no user has more credited clicks for one of them)",
    "p_value": "no user prefers either ranker yet (no user has more credited clicks for one of them)",
    "winner": "neither ranker is significantly preferred (yet)",
}
_NO_LOOK_YET = "no users in the experiment by this day, so no look of the sequential design yet"
_NO_COMPARISON_YET = "no comparison by this day: each variant needs 2 users with exposures and the metric some spread"


def strict_summary(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every non-finite float (and every known-undefined None) as None, plus ``nulls``:
    the reason for each, keyed by JSON pointer. The output serialises with ``allow_nan=False``."""
    nulls: dict[str, str] = {}

    def walk(value: Any, path: list[str]) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, [*path, str(key)]) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, [*path, str(i)]) for i, item in enumerate(value)]
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            nulls[_pointer(path)] = _why_undefined(path)
            return None
        if value is None and path[0] == "daily":  # a day before any users, or without a comparison yet
            nulls[_pointer(path)] = (
                _NO_LOOK_YET if _field(path) in ("information_fraction", "z_boundary") else _NO_COMPARISON_YET
            )
        elif value is None and _field(path) in _UNDEFINED:
            nulls[_pointer(path)] = _why_undefined(path)
        return value.item() if isinstance(value, np.generic) else value

    out = walk(result, [])
    out["nulls"] = nulls
    return out


def _pointer(path: list[str]) -> str:
    """RFC 6901 JSON pointer: ``/primary/0/relative_lift``."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _field(path: list[str]) -> str:
    """The field a value belongs to: the last key that is not a list index."""
    return next((p for p in reversed(path) if not p.isdigit()), "")


def _why_undefined(path: list[str]) -> str:
    field = _field(path)
    if field in _UNDEFINED:
        return _UNDEFINED[field]
    if path[0] == "ranking_quality":
        return "the variant served no lists"
    if path[0] == "variants" and field in RATIO_METRICS:
        return f"{field} is {' / '.join(RATIO_METRICS[field])} and this variant has no {RATIO_METRICS[field][1]}"
    return "not a finite number for these data (a division by zero or too few observations)"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_summary(result: dict[str, Any], path: Path) -> Path:
    """``result`` written to ``path`` as strict JSON (:func:`strict_summary`); returns ``path``."""
    path.write_text(json.dumps(strict_summary(result), indent=2, allow_nan=False, default=_json_default))
    return path
