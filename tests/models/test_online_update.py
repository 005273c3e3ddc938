"""Online updates of a user vector (the feedback worker's maths), on a small fold-in, without Redis."""

import numpy as np
import pytest

from models.foldin import FoldIn
from models.online_update import increment, increment_many, refold
from models.weighting import online_weight

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
    after = increment(vector, [("b", 1.0)], {"b": 2.0}, fold=fold, index=INDEX, online_boost=3.0)
    # score 2 -> 3: weight log1p(2) -> log1p(3)
    expected = vector + 3.0 * (np.log(4.0) - np.log(3.0)) * fold.matrix[1]
    np.testing.assert_allclose(after, expected, rtol=1e-6)
    assert after.dtype == np.float32


def test_events_applied_one_by_one_equal_the_fold_in_of_the_summed_scores(fold):
    events = [("a", 1.0), ("b", -0.75), ("a", 0.5), ("c", 2.0), ("b", 0.25), ("a", -2.0)]
    vector, scores = fold.tail.copy(), {}
    for track, contribution in events:
        vector = increment(vector, [(track, contribution)], scores, fold=fold, index=INDEX, online_boost=2.0)
        scores[track] = scores.get(track, 0.0) + contribution
    totals = {"a": -0.5, "b": -0.5, "c": 2.0}
    np.testing.assert_allclose(vector, folded(fold, totals, 2.0), rtol=1e-5, atol=1e-6)
    # the same events in one batch: a track heard twice continues from its first event's score
    batch = increment(fold.tail.copy(), events, {}, fold=fold, index=INDEX, online_boost=2.0)
    np.testing.assert_allclose(batch, vector, rtol=1e-5, atol=1e-6)


def test_a_skip_pushes_the_user_away_from_the_track(fold):
    after = increment(fold.tail, [("d", -0.75)], {}, fold=fold, index=INDEX, online_boost=1.0)
    np.testing.assert_allclose(after, fold.tail - 0.75 * fold.matrix[3], rtol=1e-6)


def test_online_boost_scales_the_delta(fold):
    vector, events, scores = np.zeros(3, np.float32), [("a", 1.0), ("c", 0.5)], {"c": 1.0}
    once = increment(vector, events, scores, fold=fold, index=INDEX, online_boost=1.0)
    thrice = increment(vector, events, scores, fold=fold, index=INDEX, online_boost=3.0)
    assert np.abs(once).sum() > 0
    np.testing.assert_allclose(thrice, 3.0 * once, rtol=1e-6)


def test_unknown_tracks_change_nothing(fold):
    vector = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(increment(vector, [("zz", 1.0)], {}, fold=fold, index=INDEX), vector)
    refolded, scores = refold(vector, [("zz", 1.0)], [(500, "yy", 2.0)], 100, fold=fold, index=INDEX)
    np.testing.assert_array_equal(refolded, vector)
    assert scores == {"yy": 2.0, "zz": 1.0}  # still the user's online scores against the new version


def test_inputs_are_not_modified_and_a_vector_of_another_model_comes_back_unchanged(fold):
    vector, scores = np.ones(3, np.float32), {"a": 1.0}
    increment(vector, [("a", 1.0)], scores, fold=fold, index=INDEX)
    refold(vector, [("a", 1.0)], [], 0, fold=fold, index=INDEX)
    np.testing.assert_array_equal(vector, np.ones(3, np.float32))
    assert scores == {"a": 1.0}
    other = np.ones(5, np.float32)  # not of this fold-in's dimension
    np.testing.assert_array_equal(increment(other, [("a", 1.0)], {}, fold=fold, index=INDEX), other)


def test_refold_replays_only_events_newer_than_the_training_data(fold):
    trained = np.array([0.1, 0.2, 0.3], np.float32)
    recent = [(300, "b", 1.0), (250, "a", 0.5), (200, "c", 9.0), (100, "a", 1.0)]  # newest first, as stored
    vector, scores = refold(trained, [("c", 1.0)], recent, 200, fold=fold, index=INDEX, online_boost=3.0)
    assert scores == {"b": 1.0, "a": 0.5, "c": 1.0}  # 200 and 100 are in the model's data already
    expected = trained + 3.0 * (np.log(2.0) * fold.matrix[1] + np.log(1.5) * fold.matrix[0] + np.log(2.0) * fold.matrix[2])
    np.testing.assert_allclose(vector, expected, rtol=1e-5)


def test_refold_from_the_tail_equals_incrementing_a_user_without_history(fold):
    """Re-folding a user the new version never saw is folding their online events from scratch."""
    recent = [(900, "a", 1.0), (800, "d", -0.75), (700, "a", 0.5)]
    new = [("b", 2.0)]
    vector, _ = refold(fold.tail.copy(), new, recent, 0, fold=fold, index=INDEX)
    replayed = [(t, c) for _, t, c in recent] + new
    np.testing.assert_allclose(vector, increment(fold.tail.copy(), replayed, {}, fold=fold, index=INDEX), rtol=1e-5, atol=1e-6)


def test_increment_many_equals_increment_user_by_user(fold):
    rng = np.random.default_rng(3)
    tracks = [*INDEX, "unknown"]
    vectors = rng.normal(size=(5, 3)).astype(np.float32)
    scores = [{t: float(rng.normal()) for t in rng.choice(tracks, 2)} for _ in range(5)]
    # users interleaved, some tracks heard twice by one user (the second event starts from the first's score)
    events = [(int(rng.integers(5)), str(rng.choice(tracks)), float(rng.choice([1.0, -0.75, 0.3]))) for _ in range(40)]
    together = increment_many(vectors, events, scores, fold=fold, index=INDEX, online_boost=2.0)
    for u in range(5):
        alone = increment(vectors[u], [(t, c) for owner, t, c in events if owner == u], scores[u], fold=fold, index=INDEX, online_boost=2.0)
        np.testing.assert_allclose(together[u], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(increment_many(vectors, [], scores, fold=fold, index=INDEX), vectors)
