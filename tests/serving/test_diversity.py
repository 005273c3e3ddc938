"""The per-artist diversity cap (``max_per_artist``) as a property over ranked lists hypothesis draws:
at most the cap per artist, the ranking's order kept, and nothing passed over that the cap allowed."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.filters import diversify


@st.composite
def ranked_lists(draw):
    """Rows best first with their scores, each row's first artist (-1: unknown, never capped), a cap and a count."""
    n_items = draw(st.integers(1, 40))
    first_artist = np.array(draw(st.lists(st.integers(-1, 5), min_size=n_items, max_size=n_items)), dtype=np.int64)
    rows = np.array(draw(st.permutations(range(n_items))), dtype=np.int64)[: draw(st.integers(0, n_items))]
    scores = np.sort(
        np.array(draw(st.lists(st.floats(-10, 10, width=32), min_size=len(rows), max_size=len(rows))), dtype=np.float32)
    )[::-1]
    return rows, scores, first_artist, draw(st.integers(1, 4)), draw(st.integers(1, 20))


@settings(max_examples=150, deadline=None)
@given(ranked_lists())
def test_the_cap_holds_the_order_is_kept_and_nothing_allowed_is_passed_over(case):
    rows, scores, first_artist, cap, count = case
    kept_rows, kept_scores = diversify(rows, scores, first_artist, cap, count)
    positions = [int(np.flatnonzero(rows == r)[0]) for r in kept_rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # a subsequence of the ranking
    np.testing.assert_array_equal(kept_scores, scores[positions])
    assert len(kept_rows) <= count
    artists = first_artist[kept_rows]
    assert all(np.sum(artists == a) <= cap for a in set(artists.tolist()) if a >= 0)  # the cap, per known artist
    # greedy and complete: a row left out before the list filled up had an artist already at the cap
    end = positions[-1] if len(kept_rows) == count else len(rows) - 1
    for position in set(range(end + 1)) - set(positions):
        artist = first_artist[rows[position]]
        taken_before = sum(first_artist[rows[p]] == artist for p in positions if p < position)
        assert artist >= 0 and taken_before == cap, (position, artist)
