"""Online updates of a user vector: the feedback worker's maths, without Redis.

Each live event adds its contribution (:func:`models.weighting.event_contributions`) to the user's
online score of its track. The vector follows the change of that score's fold-in weight
(:func:`models.weighting.online_weight`, the same grading as training), faded by the event's age
against the data the version was trained on (:func:`models.weighting.recency_decay`, with the
version's half-life), along the track's row of the fold-in matrix (:mod:`models.foldin`: linear, so one
event costs one row):

    user += (online_weight(new score) - online_weight(old score)) * 2 ** ((t - trained_until) / half-life) * fold.matrix[track]

which is how training weighs an event (:func:`models.weighting.graded_interactions`): a live event is
the continuation of the version's training data. A version trained without a half-life learns without
one. Live events count no more than training would count them: a boost on top (``online_boost``, 1 by
default) would make every retrain undo part of what the user taught the worker.

When the served model version changes, the user is re-folded instead: the new version's trained vector
plus every event newer than the data that version was trained on, replayed in order.

Events are ``(track_id, contribution, event_ms)``; ``index`` maps a track id to its row of the fold-in
matrix. Tracks the model does not know still get a score but move nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.foldin import FoldIn
from models.weighting import online_weight, recency_decay

# Live events count as training counts them. Before recency decay they were boosted 3x to stand in for
# it, and the next version (trained without a boost) took it back: in bench/taste_shift.py on that code
# the new genre's share went 3% -> 38% online -> 17% with the retrained version. With the decay, a boost
# would count recency twice.
ONLINE_BOOST = 1.0


@dataclass(frozen=True)
class Recency:
    """How a model version weighs an event by its time: against its training data's newest event
    (``trained_until_ms``) with its ``half_life_days`` (None: every event alike)."""

    trained_until_ms: float = 0.0
    half_life_days: float | None = None

    def decay(self, event_ms: np.ndarray | float) -> np.ndarray:
        return recency_decay(event_ms, self.trained_until_ms, self.half_life_days)


NO_DECAY = Recency()


def increment(
    vector: np.ndarray,
    events: Iterable[tuple[str, float, int]],
    scores: Mapping[str, float],
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    recency: Recency = NO_DECAY,
    online_boost: float = ONLINE_BOOST,
) -> np.ndarray:
    """The user's vector after ``events`` (track id, contribution, event ms), applied in order.

    ``vector``: the user's current vector of the model ``fold`` belongs to (its trained vector, or
    ``fold.tail`` for a user it never saw). ``scores``: the user's online score per track before the
    events (a missing track scores 0). ``recency``: the model's. Returns a new float32 vector; the inputs
    are not modified. A vector whose length is not the fold-in's (not of this model) comes back unchanged.
    """
    events = list(events)
    scores = dict(scores)
    decay = recency.decay(np.array([ms for _, _, ms in events], dtype=np.float64))
    deltas: dict[int, float] = defaultdict(float)
    for (track, contribution, _), fade in zip(events, decay):
        old = scores.get(track, 0.0)
        new = old + contribution
        scores[track] = new  # a track heard twice in one batch: the second event starts from the first's score
        row = index.get(track)
        if row is not None:
            deltas[row] += online_boost * float(online_weight(new) - online_weight(old)) * float(fade)
    return _fold(vector, fold, np.fromiter(deltas, dtype=np.int64), np.fromiter(deltas.values(), dtype=np.float32))


def increment_many(
    vectors: np.ndarray,
    events: Sequence[tuple[int, str, float, int]],
    scores: Sequence[Mapping[str, float]],
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    recency: Recency = NO_DECAY,
    online_boost: float = ONLINE_BOOST,
) -> np.ndarray:
    """:func:`increment` for many users at once: row ``u`` of the result is ``increment(vectors[u],
    their events, scores[u], ...)``. ``events``: (user row, track id, contribution, event ms), each
    user's in order; ``vectors`` (n_users, d) must be of this model. One weight evaluation and one
    scatter-add for the whole batch: the worker's per-user numpy calls cost more than the arithmetic."""
    olds, news, owners, rows, times = [], [], [], [], []
    running: dict[tuple[int, str], float] = {}
    for owner, track, contribution, event_ms in events:
        row = index.get(track)
        old = running.get((owner, track))
        if old is None:
            old = scores[owner].get(track, 0.0)
        running[owner, track] = old + contribution
        if row is not None:
            olds.append(old)
            news.append(old + contribution)
            owners.append(owner)
            rows.append(row)
            times.append(event_ms)
    out = np.array(vectors, dtype=np.float32)
    if rows:
        change = online_weight(np.array(news)) - online_weight(np.array(olds))
        weights = (online_boost * change * recency.decay(np.array(times, dtype=np.float64))).astype(np.float32)
        np.add.at(out, np.array(owners), weights[:, None] * fold.matrix[np.array(rows)])
    return out


def refold(
    vector: np.ndarray,
    events: Iterable[tuple[str, float, int]],
    recent: Iterable[tuple[int, str, float]],
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    recency: Recency = NO_DECAY,
    online_boost: float = ONLINE_BOOST,
) -> tuple[np.ndarray, dict[str, float]]:
    """The user's vector for a newly served model version, and their online scores against it.

    ``vector``: the user's trained vector of the new version (``fold.tail`` for a user it never saw).
    ``recent``: the user's remembered events as (event time in ms, track id, contribution), newest first;
    only those after the version's ``recency.trained_until_ms`` count, the model learnt the older ones
    already. ``events``: the new events (track id, contribution, event ms), all counted. Returns the
    vector with every counted event applied in order (:func:`increment` from no online score), and
    the summed score of every track, unknown ones included (the user's online scores from now on).
    """
    replay = [
        (track, contribution, ms) for ms, track, contribution in reversed(list(recent)) if ms > recency.trained_until_ms
    ]
    replay += list(events)
    scores: dict[str, float] = defaultdict(float)
    for track, contribution, _ in replay:
        scores[track] += contribution
    return increment(vector, replay, {}, fold=fold, index=index, recency=recency, online_boost=online_boost), dict(
        scores
    )


def _fold(vector: np.ndarray, fold: FoldIn, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``vector`` moved by ``weights`` along the fold-in rows ``rows`` (a copy, float32)."""
    vector = np.asarray(vector)
    if len(rows) and vector.shape[0] == fold.matrix.shape[1]:
        vector = fold.update(vector, rows, weights)
    return vector.astype(np.float32)
