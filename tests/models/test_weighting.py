"""Graded feedback with recency: hand-computed weights, and the properties online learning relies on."""

import numpy as np
import pandas as pd
import pytest

from core.training_data import log_interactions
from models.weighting import DAY_MS, fading_weights, graded_interactions, positive_log1p, recency_decay

REFERENCE = pd.Timestamp("2025-03-01T12:00:00Z")


def at(days_before: float) -> pd.Timestamp:
    return REFERENCE - pd.Timedelta(days=days_before)


def events(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "track_id", "type", "timestamp"]).assign(ms_played=None, rating=None)


def test_recency_decay_halves_per_half_life_before_the_reference_and_doubles_after():
    reference_ms = REFERENCE.timestamp() * 1000
    ages = np.array([0.0, 10.0, 25.0, -5.0])  # days before the reference (-5: five days after it)
    decay = recency_decay(reference_ms - ages * DAY_MS, reference_ms, half_life_days=10)
    np.testing.assert_allclose(decay, [1.0, 0.5, 2**-2.5, 2**0.5], rtol=1e-12)
    # no time, or no half-life: every event counts 1
    np.testing.assert_array_equal(recency_decay(np.array([np.nan]), reference_ms, 10), [1.0])
    np.testing.assert_array_equal(recency_decay(reference_ms - ages * DAY_MS, reference_ms, None), np.ones(4))
    np.testing.assert_array_equal(recency_decay(reference_ms - ages * DAY_MS, reference_ms, 0), np.ones(4))


def test_each_event_adds_its_share_of_log1p_score_faded_by_its_age():
    graded = graded_interactions(
        events(
            [
                ("u", "a", "track_completed", at(20)),  # score 1: adds log1p(1), at a quarter
                ("u", "a", "like", at(10)),  # score 3: adds log1p(3) - log1p(1), at a half
                ("u", "b", "track_completed", at(0)),  # the newest event: the reference, full weight
                ("u", "c", "track_completed", at(30)),  # old completion ...
                ("u", "c", "track_skipped", at(0)),  # ... then a skip today: score 0.25, weight below zero
                ("u", "d", "recommendation_shown", at(0)),  # exposure only: no pair
            ]
        ),
        half_life_days=10,
    )
    weight = graded.set_index("item_id")["weight"]
    expected_a = np.log(2) * 0.25 + (np.log(4) - np.log(2)) * 0.5
    expected_c = np.log(2) * 0.125 + (np.log(1.25) - np.log(2))  # -0.38: a negative
    assert expected_c < 0
    np.testing.assert_allclose(weight[["a", "b", "c"]], [expected_a, np.log(2), 0.0], rtol=1e-6)
    assert graded.set_index("item_id")["positive"].to_dict() == {"a": True, "b": True, "c": False}
    assert graded.set_index("item_id")["score"].to_dict() == {
        "a": 3.0,
        "b": 1.0,
        "c": 0.25,
    }  # the score itself does not fade
    assert "d" not in weight


def test_without_a_half_life_the_weights_are_log1p_of_the_score_as_before():
    rng = np.random.default_rng(3)
    kinds = rng.choice(["track_completed", "like", "track_skipped", "recommendation_clicked"], 300)
    frame = events(
        [
            (f"u{u}", f"t{t}", k, at(d))
            for u, t, k, d in zip(rng.integers(5, size=300), rng.integers(20, size=300), kinds, rng.uniform(0, 90, 300))
        ]
    )
    plain = graded_interactions(frame)
    np.testing.assert_array_equal(
        plain["weight"], np.where(plain["score"] > 0, np.log1p(plain["score"].clip(lower=0)), 0).astype(np.float32)
    )
    # a half-life far longer than the data: the faded sums telescope to the same weights
    slow = graded_interactions(frame, half_life_days=1e9)
    np.testing.assert_allclose(slow["weight"], plain["weight"], rtol=1e-5, atol=1e-6)
    assert (slow["positive"] == plain["positive"]).all()


def test_weights_depend_on_ages_within_the_data_not_on_the_wall_clock():
    frame = events([("u", "a", "track_completed", at(40)), ("u", "b", "like", at(3)), ("v", "a", "play", at(0))])
    later = frame.assign(timestamp=frame["timestamp"] + pd.Timedelta(days=400))  # the same data, trained a year on
    np.testing.assert_allclose(
        graded_interactions(later, half_life_days=7)["weight"],
        graded_interactions(frame, half_life_days=7)["weight"],
        rtol=1e-6,
    )


def test_a_user_whose_history_is_older_keeps_its_proportions_scaled_by_the_decay():
    """Time passing rescales a user's weights uniformly: what the worker relies on to keep a vector
    without recomputing it (and why listen counts do not turn into raw counts when old)."""
    recent = [
        ("u", "a", "track_completed", at(2)),
        ("u", "a", "like", at(1)),
        ("u", "b", "track_completed", at(1)),
        ("v", "c", "like", at(0)),
    ]
    older = [
        (u, t, k, ts - pd.Timedelta(days=14) if u == "u" else ts) for u, t, k, ts in recent
    ]  # u's history, two half-lives older
    now, before = (
        graded_interactions(events(recent), half_life_days=7),
        graded_interactions(events(older), half_life_days=7),
    )
    ratio = before.set_index("item_id")["weight"] / now.set_index("item_id")["weight"]
    np.testing.assert_allclose(ratio[["a", "b"]], 0.25, rtol=1e-6)
    assert ratio["c"] == pytest.approx(1.0)


def test_fading_weights_equal_a_naive_replay_of_each_pairs_rows():
    rng = np.random.default_rng(11)
    pairs, values, times = rng.integers(6, size=200), rng.normal(0.5, 1.0, 200), rng.integers(0, 50, 200).astype(float)
    decay = rng.uniform(0.1, 2.0, 200)
    naive = np.zeros(6)
    for pair in range(6):
        rows = [
            i for i in sorted(range(200), key=lambda i: (times[i], i)) if pairs[i] == pair
        ]  # time order, ties as given
        total = 0.0
        for i in rows:
            naive[pair] += (positive_log1p(total + values[i]) - positive_log1p(total)) * decay[i]
            total += values[i]
    np.testing.assert_allclose(
        fading_weights(pairs, values, times, positive_log1p, decay), naive, rtol=1e-9, atol=1e-12
    )


def test_interaction_logs_fade_by_row_and_logs_without_time_do_not():
    logs = pd.DataFrame(
        {
            "user_id": ["u", "u", "u"],
            "item_id": ["a", "a", "b"],
            "kind": "count",
            "value": [3.0, 1.0, 5.0],
            "timestamp": [at(14), at(0), pd.NaT],
        }
    )
    reference_ms = REFERENCE.timestamp() * 1000
    graded = log_interactions(logs, half_life_days=7, reference_ms=reference_ms).set_index("item_id")
    # a: 3 listens two half-lives ago, then one now; b: no time, counted as at the reference
    np.testing.assert_allclose(graded.loc["a", "weight"], np.log1p(3) * 0.25 + np.log1p(4) - np.log1p(3), rtol=1e-6)
    np.testing.assert_allclose(graded.loc["b", "weight"], np.log1p(5), rtol=1e-6)
    plain = log_interactions(logs).set_index("item_id")
    np.testing.assert_allclose(plain["weight"], np.log1p([4.0, 5.0]), rtol=1e-6)
