"""Experiment metrics from events: first per user, then per variant.

Each metric is a ratio of per-user sums (``numerator / denominator``), analysed with the delta method so
that heavy users do not masquerade as many independent observations.

==================  ====================================  ==================================
metric              numerator (per user)                  denominator (per user)
==================  ====================================  ==================================
ctr                 recommendation_clicked events         recommendation_shown events
completion_rate     track_completed                       streams (completed + skipped + play)
skip_rate           track_skipped                         streams
listening_minutes   ms_played / 60,000                    1 (a plain per-user mean)
mean_rating         sum of explicit ratings               number of explicit ratings
==================  ====================================  ==================================

An event counts for the experiment and variant in its columns, which the server fills (never the client:
see ``context_source`` in :data:`core.contracts.events.EVENT_SCHEMA`). Shown and clicked events count for
click-through only when they name a served list: the API's own exposures, clicks carrying the list's
request token, or imported rows. A click or shown event with no token is stamped with the user's arm
for the user-level metrics but is untargeted: it names no list, so it is not in ``ctr``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RATIO_METRICS: dict[str, tuple[str, str]] = {
    "ctr": ("clicked", "shown"),
    "completion_rate": ("completed", "streams"),
    "skip_rate": ("skipped", "streams"),
    "listening_minutes": ("minutes", "one"),
    "mean_rating": ("rating_sum", "ratings"),
}
# metrics where lower is better (a guardrail breaches when they rise)
LOWER_IS_BETTER = {"skip_rate"}


def user_metrics(events: pd.DataFrame, experiment_id: str) -> pd.DataFrame:
    """One row per (variant, user) of the experiment with the sums every metric needs."""
    ev = events[events["experiment_id"] == experiment_id]
    kind = ev["type"]
    targeted = ev["context_source"].ne("assignment") if "context_source" in ev else True
    counts = pd.DataFrame(
        {
            "variant": ev["variant"],
            "user_id": ev["user_id"],
            "shown": ((kind == "recommendation_shown") & targeted).astype(np.int64),
            "clicked": ((kind == "recommendation_clicked") & targeted).astype(np.int64),
            "completed": (kind == "track_completed").astype(np.int64),
            "skipped": (kind == "track_skipped").astype(np.int64),
            "streams": kind.isin(["track_completed", "track_skipped", "play"]).astype(np.int64),
            "minutes": pd.to_numeric(ev["ms_played"], errors="coerce").fillna(0).astype(np.float64) / 60_000,
            "rating_sum": pd.to_numeric(ev["rating"], errors="coerce").fillna(0).astype(np.float64),
            "ratings": (kind == "explicit_rating").astype(np.int64),
        }
    )
    per_user = counts.groupby(["variant", "user_id"], sort=True).sum().reset_index()
    per_user["one"] = 1.0
    return per_user


def untargeted_clicks(events: pd.DataFrame, experiment_id: str) -> int:
    """Clicks stamped with the experiment from the user's arm alone (no request token): left out of
    click-through."""
    if "context_source" not in events:
        return 0
    ev = events[(events["experiment_id"] == experiment_id) & (events["context_source"] == "assignment")]
    return int((ev["type"] == "recommendation_clicked").sum())


def variant_summary(per_user: pd.DataFrame) -> pd.DataFrame:
    """Per variant: users, exposures and every metric's value (ratio of sums)."""
    grouped = per_user.groupby("variant")
    out = pd.DataFrame({"users": grouped.size(), "shown": grouped["shown"].sum(), "clicked": grouped["clicked"].sum()})
    for name, (num, den) in RATIO_METRICS.items():
        out[name] = grouped[num].sum() / grouped[den].sum().replace(0, np.nan)
    return out
