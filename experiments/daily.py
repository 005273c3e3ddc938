"""The experiment day by day, as a reviewer who looked every day saw it: per UTC day, the exposures of
each variant, and the primary metric's lift on all data up to the end of that day judged against the
group-sequential boundary of that day's look.

The lift and its interval come from the final analysis's own comparison (delta method, CUPED when the
pre-period varies; passed in as ``compare``), so the last day's figures are the verdict's. The looks are
the users in the two variants at the end of each day, as shares of the planned users, and the boundary
is :func:`experiments.sequential.group_sequential_boundary` of those shares: one call for all days,
since a look's boundary depends only on the looks up to it. The design is the final analysis's (its
planned size), so on earlier days it can differ from what was computed on that day if the plan grew.

Per day, ``relative_ci`` is the repeated confidence interval (estimate ± boundary · standard error on
the log scale, as :func:`experiments.sequential.group_sequential_comparison` makes it) and
``boundary_lift`` the relative lifts at which |z| reaches the boundary: ± boundary · se / control, so
the lift line crosses them exactly when the design rejects (before any Holm adjustment across treatments).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from experiments.definition import Experiment
from experiments.metrics import user_metrics
from experiments.sequential import group_sequential_boundary
from experiments.stats import Comparison

# the cumulative comparison from per-user sums so far (user_metrics indexed by user id); None when
# the data cannot support one yet
CumulativeComparison = Callable[[pd.DataFrame], Comparison | None]


def experiment_days(experiment: Experiment, timestamps: pd.Series) -> list[date]:
    """UTC days from the start (its date, or the first event's when no start is set) to the last event's
    (``timestamps``: the experiment's own events, already within its dates); [] without events."""
    if timestamps.empty:
        return []
    when = pd.to_datetime(timestamps, utc=True)
    first = experiment.start.date() if experiment.start else when.min().date()
    return [first + timedelta(days=i) for i in range((when.max().date() - first).days + 1)]


def daily_series(
    experiment: Experiment, events: pd.DataFrame, treatment: str, compare: CumulativeComparison, planned_users: int
) -> dict[str, Any]:
    """``treatment`` against the control, one record per day of :func:`experiment_days`: ``day`` (ISO
    date), ``shown`` and ``exposed_users`` per variant that day (recommendation_shown events, distinct
    users with one), ``users`` in the two variants so far, ``information_fraction``, and from the data
    so far ``relative_lift``, ``relative_ci``, ``z``, ``z_boundary``, ``boundary_lift``, ``crossed``
    (None on a day without a comparison). ``events``: the analysed events (within the dates)."""
    control, alpha = experiment.control.name, experiment.alpha
    pair = [control, treatment]
    own = events[(events["experiment_id"] == experiment.id) & events["variant"].isin(pair)]
    when = pd.to_datetime(own["timestamp"], utc=True)
    days = experiment_days(experiment, when)
    day_of = when.dt.date
    shown = own[own["type"] == "recommendation_shown"].assign(day=day_of)
    exposures = shown.groupby(["day", "variant"])["user_id"].agg(["size", "nunique"])

    records, comparisons, totals = [], [], None
    for day in days:
        # each event is summed once (into its day's per-user sums), so a long experiment costs one pass
        today = user_metrics(own[day_of == day], experiment.id).set_index(["variant", "user_id"])
        totals = today if totals is None else totals.add(today, fill_value=0)
        so_far = totals.reset_index("variant").assign(one=1.0)  # "one" is one per user, not per day
        comparison = compare(so_far) if len(so_far) else None
        comparisons.append(comparison if comparison is not None and comparison.std_error > 0 else None)
        records.append(
            {
                "day": day.isoformat(),
                "shown": {v: int(exposures["size"].get((day, v), 0)) for v in pair},
                "exposed_users": {v: int(exposures["nunique"].get((day, v), 0)) for v in pair},
                "users": len(so_far),
            }
        )

    users = np.array([r["users"] for r in records], dtype=np.int64)
    looks = np.unique(users[users > 0])
    planned = max(planned_users, int(looks[-1])) if len(looks) else planned_users
    boundary = (
        dict(zip(looks.tolist(), group_sequential_boundary(looks / planned, alpha).tolist())) if len(looks) else {}
    )
    for record, comparison in zip(records, comparisons, strict=True):
        z_boundary = boundary.get(record["users"])
        record["information_fraction"] = record["users"] / planned if z_boundary is not None else None
        record |= _judged(comparison, z_boundary)
    return {
        "variant": treatment,
        "control": control,
        "metric": experiment.primary_metric,
        "planned_users": planned,
        "alpha": alpha,
        "days": records,
    }


def earlier_looks(series: dict[str, Any]) -> list[int]:
    """Users in the two variants at the end of each day before the last (the looks a daily reviewer
    made before today), for :func:`experiments.sequential.group_sequential_comparison`."""
    return [d["users"] for d in series["days"][:-1] if d["users"] > 0]


def _judged(comparison: Comparison | None, z_boundary: float | None) -> dict[str, Any]:
    """A day's lift, repeated interval, z and boundary (None when there is no comparison)."""
    if comparison is None or z_boundary is None:
        return dict.fromkeys(("relative_lift", "relative_ci", "z", "z_boundary", "boundary_lift", "crossed")) | {
            "z_boundary": z_boundary
        }
    c, nan = comparison, float("nan")
    z = c.absolute_lift / c.std_error
    relative_ci = boundary_lift = (nan, nan)
    if np.isfinite(c.log_ratio_std_error):
        log_ratio, radius = np.log1p(c.relative_lift), z_boundary * c.log_ratio_std_error
        relative_ci = (float(np.expm1(log_ratio - radius)), float(np.expm1(log_ratio + radius)))
    if c.control > 0:
        boundary_lift = (-z_boundary * c.std_error / c.control, z_boundary * c.std_error / c.control)
    return {
        "relative_lift": float(c.relative_lift),
        "relative_ci": relative_ci,
        "z": float(z),
        "z_boundary": z_boundary,
        "boundary_lift": boundary_lift,
        "crossed": bool(abs(z) >= z_boundary),
    }
