"""Online updates of a user vector (the feedback worker's maths), on a small fold-in, without Redis."""

import numpy as np
import pytest

from models.foldin import FoldIn
from models.online_update import Recency, increment, increment_many, refold
from models.weighting import DAY_MS, online_weight

INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}


@pytest.fixture
def fold() -> FoldIn:
    rng = np.random.default_rng(7)
    return FoldIn(rng.normal(size=(4, 3)).astype(np.float32), np.array([0.5, -1.0, 0.25], np.float32))


def folded(fold, scores, boost):
    """Naive reference: the fold-in of the boosted online weights of ``scores``, from the tail."""
    rows = [INDEX[t] for t in scores]
    weights = [boost * float(online_weight(s)) for s in scores.values()]
    return fold.tail.astype(np.float64) + np.array(weights) @ fold.matrix[rows].astype(np.float64)


def test_one_event_moves_the_vector_by_its_boosted_weight_change_along_the_track_row(fold):
    vector = np.array([1.0, 2.0, 3.0], np.float32)
    after = increment(vector, [("b", 1.0, 0)], {"b": 2.0}, fold=fold, index=INDEX, online_boost=3.0)
    # score 2 -> 3: weight log1p(2) -> log1p(3)
    expected = vector + 3.0 * (np.log(4.0) - np.log(3.0)) * fold.matrix[1]
    np.testing.assert_allclose(after, expected, rtol=1e-6)
    assert after.dtype == np.float32


def test_events_applied_one_by_one_equal_the_fold_in_of_the_summed_scores(fold):
    events = [("a", 1.0, 0), ("b", -0.75, 0), ("a", 0.5, 0), ("c", 2.0, 0), ("b", 0.25, 0), ("a", -2.0, 0)]
    vector, scores = fold.tail.copy(), {}
    for track, contribution, ms in events:
        vector = increment(vector, [(track, contribution, ms)], scores, fold=fold, index=INDEX, online_boost=2.0)
        scores[track] = scores.get(track, 0.0) + contribution
    totals = {"a": -0.5, "b": -0.5, "c": 2.0}
    np.testing.assert_allclose(vector, folded(fold, totals, 2.0), rtol=1e-5, atol=1e-6)
    # the same events in one batch: a track heard twice continues from its first event's score
    batch = increment(fold.tail.copy(), events, {}, fold=fold, index=INDEX, online_boost=2.0)
    np.testing.assert_allclose(batch, vector, rtol=1e-5, atol=1e-6)


def test_a_skip_pushes_the_user_away_from_the_track(fold):
    after = increment(fold.tail, [("d", -0.75, 0)], {}, fold=fold, index=INDEX, online_boost=1.0)
    np.testing.assert_allclose(after, fold.tail - 0.75 * fold.matrix[3], rtol=1e-6)


def test_online_boost_scales_the_delta(fold):
    vector, events, scores = np.zeros(3, np.float32), [("a", 1.0, 0), ("c", 0.5, 0)], {"c": 1.0}
    once = increment(vector, events, scores, fold=fold, index=INDEX, online_boost=1.0)
    thrice = increment(vector, events, scores, fold=fold, index=INDEX, online_boost=3.0)
    assert np.abs(once).sum() > 0
    np.testing.assert_allclose(thrice, 3.0 * once, rtol=1e-6)


def test_unknown_tracks_change_nothing(fold):
    vector = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(increment(vector, [("zz", 1.0, 0)], {}, fold=fold, index=INDEX), vector)
    refolded, scores = refold(
        vector, [("zz", 1.0, 600)], [(500, "yy", 2.0)], fold=fold, index=INDEX, recency=Recency(100)
    )
    np.testing.assert_array_equal(refolded, vector)
    assert scores == {"yy": 2.0, "zz": 1.0}  # still the user's online scores against the new version


def test_inputs_are_not_modified_and_a_vector_of_another_model_comes_back_unchanged(fold):
    vector, scores = np.ones(3, np.float32), {"a": 1.0}
    increment(vector, [("a", 1.0, 0)], scores, fold=fold, index=INDEX)
    refold(vector, [("a", 1.0, 0)], [], fold=fold, index=INDEX)
    np.testing.assert_array_equal(vector, np.ones(3, np.float32))
    assert scores == {"a": 1.0}
    other = np.ones(5, np.float32)  # not of this fold-in's dimension
    np.testing.assert_array_equal(increment(other, [("a", 1.0, 0)], {}, fold=fold, index=INDEX), other)


def test_refold_replays_only_events_newer_than_the_training_data(fold):
    trained = np.array([0.1, 0.2, 0.3], np.float32)
    recent = [(300, "b", 1.0), (250, "a", 0.5), (200, "c", 9.0), (100, "a", 1.0)]  # newest first, as stored
    vector, scores = refold(
        trained, [("c", 1.0, 400)], recent, fold=fold, index=INDEX, recency=Recency(200), online_boost=3.0
    )
    assert scores == {"b": 1.0, "a": 0.5, "c": 1.0}  # 200 and 100 are in the model's data already
    expected = trained + 3.0 * (
        np.log(2.0) * fold.matrix[1] + np.log(1.5) * fold.matrix[0] + np.log(2.0) * fold.matrix[2]
    )
    np.testing.assert_allclose(vector, expected, rtol=1e-5)


def test_refold_from_the_tail_equals_incrementing_a_user_without_history(fold):
    """Re-folding a user the new version never saw is folding their online events from scratch."""
    recent = [(900, "a", 1.0), (800, "d", -0.75), (700, "a", 0.5)]
    new = [("b", 2.0, 1000)]
    week = Recency(0, half_life_days=7 * 800 / DAY_MS)  # a half-life of 800 ms: the events fade measurably
    vector, _ = refold(fold.tail.copy(), new, recent, fold=fold, index=INDEX, recency=week)
    replayed = [(t, c, ms) for ms, t, c in reversed(recent)] + new  # oldest first, as they happened
    np.testing.assert_allclose(
        vector, increment(fold.tail.copy(), replayed, {}, fold=fold, index=INDEX, recency=week), rtol=1e-5, atol=1e-6
    )


def test_increment_many_equals_increment_user_by_user(fold):
    rng = np.random.default_rng(3)
    tracks = [*INDEX, "unknown"]
    vectors = rng.normal(size=(5, 3)).astype(np.float32)
    scores = [{t: float(rng.normal()) for t in rng.choice(tracks, 2)} for _ in range(5)]
    # users interleaved, some tracks heard twice by one user (the second event starts from the first's score)
    events = [
        (
            int(rng.integers(5)),
            str(rng.choice(tracks)),
            float(rng.choice([1.0, -0.75, 0.3])),
            int(rng.integers(0, 10 * DAY_MS)),
        )
        for _ in range(40)
    ]
    recency = Recency(5 * DAY_MS, half_life_days=3)
    together = increment_many(vectors, events, scores, fold=fold, index=INDEX, recency=recency, online_boost=2.0)
    for u in range(5):
        theirs = [(t, c, ms) for owner, t, c, ms in events if owner == u]
        alone = increment(vectors[u], theirs, scores[u], fold=fold, index=INDEX, recency=recency, online_boost=2.0)
        np.testing.assert_allclose(together[u], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(increment_many(vectors, [], scores, fold=fold, index=INDEX), vectors)


def test_a_live_event_counts_by_its_age_against_the_versions_training_data(fold):
    trained_until = 1_000 * DAY_MS
    week = Recency(trained_until, half_life_days=7)
    vector = np.zeros(3, np.float32)
    step = np.log1p(1.0) * fold.matrix[0]  # one completion of a track never heard
    cases = {
        trained_until: 1.0,
        trained_until + 7 * DAY_MS: 2.0,
        trained_until + 14 * DAY_MS: 4.0,
        trained_until - 7 * DAY_MS: 0.5,
    }
    for event_ms, factor in cases.items():
        after = increment(vector, [("a", 1.0, event_ms)], {}, fold=fold, index=INDEX, recency=week)
        np.testing.assert_allclose(
            after, factor * step, rtol=1e-5, err_msg=f"event {(event_ms - trained_until) / DAY_MS:+.0f} days"
        )
    # a version trained without a half-life learns without one
    np.testing.assert_allclose(
        increment(vector, [("a", 1.0, trained_until + 14 * DAY_MS)], {}, fold=fold, index=INDEX), step, rtol=1e-5
    )


def test_online_learning_continues_training_on_the_events_after_it():
    """The worker's vector after live events equals the fold-in of training's weights over the same
    events, measured against the version's training data (tracks not in the user's history: online
    scores start from zero at each version)."""
    import pandas as pd

    from models.weighting import graded_interactions

    rng = np.random.default_rng(5)
    tracks = [f"t{i}" for i in range(8)]
    fold = FoldIn(rng.normal(size=(8, 4)).astype(np.float32), np.array([0, 0, 0, 1], np.float32))
    index = {t: i for i, t in enumerate(tracks)}
    day = pd.Timedelta(days=1)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    history = [
        ("t0", "track_completed", start),
        ("t1", "like", start + 3 * day),
        ("t0", "track_skipped", start + 9 * day),
        ("t2", "play", start + 10 * day),
    ]
    live = [
        ("t5", "like", start + 12 * day),
        ("t6", "track_completed", start + 13 * day),
        ("t5", "track_completed", start + 15 * day),
    ]

    def frame(rows):
        return pd.DataFrame(
            [
                {"user_id": "u", "track_id": t, "type": k, "timestamp": ts, "ms_played": None, "rating": None}
                for t, k, ts in rows
            ]
        )

    trained_until = (start + 10 * day).timestamp() * 1000
    recency = Recency(trained_until, half_life_days=5)
    trained = graded_interactions(frame(history), half_life_days=5, reference_ms=trained_until)
    vector = fold.vector(np.array([index[t] for t in trained["item_id"]]), trained["weight"].to_numpy())
    contribution = {"like": 2.0, "track_completed": 1.0}
    online = increment(
        vector,
        [(t, contribution[k], ts.timestamp() * 1000) for t, k, ts in live],
        {},
        fold=fold,
        index=index,
        recency=recency,
    )
    both = graded_interactions(frame(history + live), half_life_days=5, reference_ms=trained_until)
    np.testing.assert_allclose(
        online,
        fold.vector(np.array([index[t] for t in both["item_id"]]), both["weight"].to_numpy()),
        rtol=1e-5,
        atol=1e-6,
    )
