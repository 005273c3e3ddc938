"""Graded implicit feedback: the one mapping from events and listen counts to training weights.

Every algorithm trains on the weights produced here; the feedback worker's fold-in uses the same
function, so online and offline learning agree.

=========================  ==========================================================
event                      contribution to the (user, track) score
=========================  ==========================================================
``track_completed``        +1.0
``play``                   +completion ratio (ms_played / duration), 0.5 if unknown
``like``                   +2.0
``explicit_rating``        rating - 3   (1 star = -2 ... 5 stars = +2)
``recommendation_clicked`` +0.25
``track_skipped``          -0.75 (a negative signal)
``recommendation_shown``   0 (exposure, not preference)
=========================  ==========================================================

The per-pair score ``s`` is the sum of its events' contributions. Pairs with ``s > 0`` are positives
with training weight ``log1p(s)`` (repeat listens count, with diminishing returns); pairs with
``s <= 0`` are negatives (returned separately; never positives). Listen counts (``count`` column, as
in Last.fm or generic logs) get ``log1p(count)`` directly (:func:`count_weights`); a table that already
has a ``weight`` column keeps it (:func:`table_weights`).

Recent listening counts more (:func:`recency_decay`, :func:`fading_weights`): with a half-life ``h``,
each event adds to its pair's weight what it adds to ``log1p(score)`` (the score just after it, minus
just before it), times ``2 ** ((t - reference) / h)``; the reference is the newest event of the training
data (never the wall clock). Without a half-life the additions telescope to ``log1p(score)``: the
weights above, exactly. A taste of last month then outweighs a year-old one; what a user heard only long
ago keeps its internal proportions (every weight of theirs shrinks by the same factor); and the feedback
worker folds a live event in with the same factor against the served version's reference, so online
learning is the continuation of training (:mod:`models.online_update`), and a uniform passing of time
only rescales a user's vector. Pairs whose weight fades to 0 or below (a recent skip after old plays)
are negatives. Rows without a time count as if at the reference (Last.fm's listen counts carry none).

Algorithms take these weights as they are: EASE and low-rank EASE use them as the matrix entries,
LightFM as sample weights of binary positives, popularity and genre popularity count users with a
positive weight, the content model averages item vectors with them. None re-weights them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EVENT_CONTRIBUTION: dict[str, float] = {
    "track_completed": 1.0,
    "play": 0.5,  # replaced by the completion ratio when ms_played and duration are known
    "like": 2.0,
    "explicit_rating": 0.0,  # replaced by rating - 3
    "recommendation_clicked": 0.25,
    "track_skipped": -0.75,
    "recommendation_shown": 0.0,
}


def event_contributions(events: pd.DataFrame, durations: pd.Series | None = None) -> np.ndarray:
    """Per-event score contribution (see the module table). ``durations``: duration_ms by track_id."""
    kind = events["type"].astype(str)
    out = kind.map(EVENT_CONTRIBUTION).fillna(0.0).to_numpy(dtype=np.float64)
    rated = (kind == "explicit_rating").to_numpy()
    if rated.any():
        out[rated] = pd.to_numeric(events["rating"], errors="coerce").to_numpy()[rated] - 3.0
    plays = (kind == "play").to_numpy()
    if plays.any() and durations is not None and "ms_played" in events:
        dur = events["track_id"].map(durations).to_numpy(dtype=np.float64)
        ratio = pd.to_numeric(events["ms_played"], errors="coerce").to_numpy(dtype=np.float64) / dur
        known = plays & np.isfinite(ratio)
        out[known] = np.clip(ratio[known], 0.0, 1.0)
    return np.nan_to_num(out)


DAY_MS = 86_400_000
# a factor of 2**±60 at most: weights stay finite and float32 user vectors keep their precision
_MAX_HALF_LIVES = 60.0


def recency_decay(event_ms: np.ndarray | float, reference_ms: float, half_life_days: float | None) -> np.ndarray:
    """How much an event at ``event_ms`` (epoch ms) counts against ``reference_ms``: ``2 ** ((event_ms -
    reference_ms) / half-life)``, so 1 at the reference, 1/2 one half-life before it, 2 one half-life
    after it (a live event folded into a version trained earlier). ``half_life_days`` None or 0: no decay;
    an event without a time (NaN) counts 1. Exponents are clipped to ±60 half-lives."""
    t = np.asarray(event_ms, dtype=np.float64)
    if not half_life_days:
        return np.ones(t.shape)
    halves = np.clip((t - float(reference_ms)) / (float(half_life_days) * DAY_MS), -_MAX_HALF_LIVES, _MAX_HALF_LIVES)
    return np.where(np.isfinite(halves), np.exp2(halves), 1.0)


def positive_log1p(score: np.ndarray) -> np.ndarray:
    """The training weight of a pair's score: ``log1p`` above zero, 0 at or below (a negative)."""
    return np.log1p(np.maximum(np.asarray(score, dtype=np.float64), 0.0))


def fading_weights(pairs: np.ndarray, values: np.ndarray, times_ms: np.ndarray, grade, decay: np.ndarray) -> np.ndarray:
    """Per pair (``pairs``: a code 0..n-1 per row), the sum over its rows in time order of ``grade(running
    total after the row) - grade(running total before it)``, each times the row's ``decay``. With every
    decay 1 the sum telescopes to ``grade(total)``. Rows of one pair at the same time keep their order."""
    pairs = np.asarray(pairs, dtype=np.int64)
    order = np.lexsort((np.nan_to_num(np.asarray(times_ms, dtype=np.float64), nan=np.inf), pairs))
    owner = pairs[order]
    running = pd.Series(np.asarray(values, dtype=np.float64)[order]).groupby(owner).cumsum().to_numpy()
    graded = grade(running)
    before = np.concatenate([[0.0], graded[:-1]])
    before[np.concatenate([[True], owner[1:] != owner[:-1]])] = 0.0  # a pair's first row starts from nothing
    n = int(pairs.max()) + 1 if len(pairs) else 0
    return np.bincount(owner, weights=(graded - before) * np.asarray(decay, dtype=np.float64)[order], minlength=n)


def timestamps_ms(values: pd.Series | np.ndarray) -> np.ndarray:
    """Epoch milliseconds of timestamps (NaN where there is none)."""
    when = pd.to_datetime(pd.Series(np.asarray(values)), utc=True, errors="coerce")
    return np.where(when.notna(), when.astype("int64") / 1e6, np.nan)


def graded_interactions(
    events: pd.DataFrame,
    durations: pd.Series | None = None,
    half_life_days: float | None = None,
    reference_ms: float | None = None,
) -> pd.DataFrame:
    """Aggregate events to one row per (user_id, item_id): score, weight, events, last timestamp.

    ``weight`` is ``log1p(score)`` for positives and 0 for negatives; ``positive`` says which. With
    ``half_life_days``, the weight fades with the age of each event against ``reference_ms`` (default:
    the newest event given; see the module docstring), and a pair is positive when its weight is.
    """
    frame = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str).to_numpy(),
            "item_id": events["track_id"].astype(str).to_numpy(),
            "score": event_contributions(events, durations),
            "timestamp": events["timestamp"].to_numpy() if "timestamp" in events else pd.NaT,
        }
    )
    # exposures say nothing about preference: a pair seen only in a slate is not an interaction
    frame = frame[(events["type"] != "recommendation_shown").to_numpy()]
    groups = frame.groupby(["user_id", "item_id"], sort=False)
    grouped = groups.agg(score=("score", "sum"), events=("score", "size"), timestamp=("timestamp", "max"))
    grouped = grouped.reset_index()
    if half_life_days:
        when = timestamps_ms(frame["timestamp"])
        reference = reference_ms if reference_ms is not None else (np.nanmax(when) if np.isfinite(when).any() else 0.0)
        weight = fading_weights(
            groups.ngroup().to_numpy(),
            frame["score"].to_numpy(),
            when,
            positive_log1p,
            recency_decay(when, reference, half_life_days),
        )
        grouped["weight"] = np.maximum(weight, 0.0).astype(np.float32)
        grouped["positive"] = grouped["weight"] > 0
        return grouped[["user_id", "item_id", "score", "events", "timestamp", "positive", "weight"]]
    grouped["positive"] = grouped["score"] > 0
    grouped["weight"] = np.where(grouped["positive"], np.log1p(grouped["score"].clip(lower=0)), 0.0).astype(np.float32)
    return grouped


def count_weights(counts: np.ndarray) -> np.ndarray:
    """Training weight of a listen count: log1p, since counts span 1 to 10^5."""
    return np.log1p(np.asarray(counts, dtype=np.float64)).astype(np.float32)


def table_weights(frame: pd.DataFrame) -> np.ndarray:
    """Training weights of a generic interactions table: its ``weight`` column as given (already
    graded), else ``count_weights`` of its ``count`` column (raw listen counts)."""
    if "weight" in frame:
        return pd.to_numeric(frame["weight"], errors="raise").to_numpy(dtype=np.float32)
    if "count" in frame:
        return count_weights(pd.to_numeric(frame["count"], errors="raise").to_numpy())
    raise ValueError(f"no 'weight' or 'count' column (columns: {', '.join(map(str, frame.columns))})")


def raw_count_evidence(values: np.ndarray) -> str | None:
    """Why ``values`` look like raw listen counts rather than graded weights, or None. Raw counts are
    non-negative integers spanning orders of magnitude (Last.fm's range from 1 to 352,698, median
    260); graded weights are log-scaled and rarely above 10. Taken as final weights, counts let a few
    obsessive listens dominate: on HetRec Last.fm NDCG@10 drops from 0.25 to 0.17."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v) or (v < 0).any() or not np.all(np.mod(v, 1) == 0):
        return None
    top, median = float(v.max()), float(np.median(v))
    if top <= 10 or top < 20 * max(median, 1.0):
        return None
    return f"holds integers from {v.min():,.0f} to {top:,.0f} with a heavy tail (median {median:,.0f})"


def online_weight(score: np.ndarray | float) -> np.ndarray:
    """Fold-in weight of a (user, track) score accumulated online: ``log1p(score)`` above zero, as in
    training, and the score itself below (a skip, -0.75, pushes the user away from the track)."""
    score = np.asarray(score, dtype=np.float64)
    return np.where(score > 0, np.log1p(np.maximum(score, 0.0)), score)
