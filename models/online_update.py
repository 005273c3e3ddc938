"""Online updates of a user vector: the feedback worker's maths, without Redis.

Each live event adds its contribution (:func:`models.weighting.event_contributions`) to the user's
online score of its track. The vector follows the change of that score's fold-in weight
(:func:`models.weighting.online_weight`, the same grading as training), boosted, along the track's row
of the fold-in matrix (:mod:`models.foldin`: linear, so one event costs one row):

    user += online_boost * (online_weight(new score) - online_weight(old score)) * fold.matrix[track]

When the served model version changes, the user is re-folded instead: the new version's trained vector
plus every event newer than the data that version was trained on.

Events are plain ``(track_id, contribution)`` pairs; ``index`` maps a track id to its row of the fold-in
matrix. Tracks the model does not know still get a score but move nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from models.foldin import FoldIn
from models.weighting import online_weight

# live events say more about what the listener wants now than the history the model learnt from: their
# fold-in weights are multiplied by this (3 skips of one genre then visibly move the next list)
ONLINE_BOOST = 3.0


def increment(
    vector: np.ndarray,
    events: Iterable[tuple[str, float]],
    scores: Mapping[str, float],
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    online_boost: float = ONLINE_BOOST,
) -> np.ndarray:
    """The user's vector after ``events`` (track id, contribution), applied in order.

    ``vector``: the user's current vector of the model ``fold`` belongs to (its trained vector, or
    ``fold.tail`` for a user it never saw). ``scores``: the user's online score per track before the
    events (a missing track scores 0). Returns a new float32 vector; the inputs are not modified. A vector
    whose length is not the fold-in's (not of this model) comes back unchanged.
    """
    scores = dict(scores)
    deltas: dict[int, float] = defaultdict(float)
    for track, contribution in events:
        old = scores.get(track, 0.0)
        new = old + contribution
        scores[track] = new  # a track heard twice in one batch: the second event starts from the first's score
        row = index.get(track)
        if row is not None:
            deltas[row] += online_boost * float(online_weight(new) - online_weight(old))
    return _fold(vector, fold, np.fromiter(deltas, dtype=np.int64), np.fromiter(deltas.values(), dtype=np.float32))


def increment_many(
    vectors: np.ndarray,
    events: Sequence[tuple[int, str, float]],
    scores: Sequence[Mapping[str, float]],
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    online_boost: float = ONLINE_BOOST,
) -> np.ndarray:
    """:func:`increment` for many users at once: row ``u`` of the result is ``increment(vectors[u],
    their events, scores[u], ...)``. ``events``: (user row, track id, contribution), each user's in
    order; ``vectors`` (n_users, d) must be of this model. One weight evaluation and one scatter-add
    for the whole batch: the worker's per-user numpy calls cost more than the arithmetic."""
    olds, news, owners, rows = [], [], [], []
    running: dict[tuple[int, str], float] = {}
    for owner, track, contribution in events:
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
    out = np.array(vectors, dtype=np.float32)
    if rows:
        weights = (online_boost * (online_weight(np.array(news)) - online_weight(np.array(olds)))).astype(np.float32)
        np.add.at(out, np.array(owners), weights[:, None] * fold.matrix[np.array(rows)])
    return out


def refold(
    vector: np.ndarray,
    events: Iterable[tuple[str, float]],
    recent: Iterable[tuple[int, str, float]],
    trained_until_ms: int,
    *,
    fold: FoldIn,
    index: Mapping[str, int],
    online_boost: float = ONLINE_BOOST,
) -> tuple[np.ndarray, dict[str, float]]:
    """The user's vector for a newly served model version, and their online scores against it.

    ``vector``: the user's trained vector of the new version (``fold.tail`` for a user it never saw).
    ``recent``: the user's remembered events as (event time in ms, track id, contribution); only those
    after ``trained_until_ms`` count, the model learnt the older ones already. ``events``: the new
    events (track id, contribution), all counted. Returns the vector plus ``online_boost *
    online_weight(score)`` of every known track along its fold-in row (float32, a new array), and the
    summed score of every track, unknown ones included (the user's online scores from now on).
    """
    scores: dict[str, float] = defaultdict(float)
    for event_ms, track, contribution in recent:
        if event_ms > trained_until_ms:
            scores[track] += contribution
    for track, contribution in events:
        scores[track] += contribution
    rows, weights = [], []
    for track, score in scores.items():
        row = index.get(track)
        if row is not None:
            rows.append(row)
            weights.append(online_boost * float(online_weight(score)))
    return _fold(vector, fold, np.array(rows, dtype=np.int64), np.array(weights, dtype=np.float32)), dict(scores)


def _fold(vector: np.ndarray, fold: FoldIn, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``vector`` moved by ``weights`` along the fold-in rows ``rows`` (a copy, float32)."""
    vector = np.asarray(vector)
    if len(rows) and vector.shape[0] == fold.matrix.shape[1]:
        vector = fold.update(vector, rows, weights)
    return vector.astype(np.float32)
