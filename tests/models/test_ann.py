"""The ANN index against exact scoring on seeded vectors: recall, filters that never leak, the exact
fallback for selective filters, rows appended after the build, and z-scores from moments."""

import io

import numpy as np
import pytest

from models.ann import CatalogIndex, InnerProductIndex, ScoreMoments, UnknownIndexFormat, approximate_top_n
from models.ranking import top_n


@pytest.fixture(scope="module")
def vectors():
    """Low-rank-like item vectors with a bias coordinate (users have 1 there), and 50 users."""
    rng = np.random.default_rng(3)
    scale = 1 / np.sqrt(np.arange(1, 16))
    items = np.hstack([rng.standard_normal((4000, 15)) * scale, rng.normal(0, 0.3, (4000, 1))]).astype(np.float32)
    users = np.hstack([rng.standard_normal((50, 15)) * scale, np.ones((50, 1))]).astype(np.float32)
    return items, users


@pytest.fixture(scope="module")
def index(vectors):
    return InnerProductIndex.build(vectors[0], threads=1)


def test_recall_at_10_against_exact(vectors, index):
    items, users = vectors
    recall = []
    for user in users:
        rows, scores = approximate_top_n(index, items, user, 10)
        exact, exact_scores = top_n(items @ user, 10)
        recall.append(len(set(rows.tolist()) & set(exact.tolist())) / 10)
        assert np.allclose(scores, items[rows] @ user)  # returned scores are the exact served scores, best first
        assert np.all(np.diff(scores) <= 0)
    assert np.mean(recall) >= 0.95


def test_filters_and_exclusions_never_leak(vectors, index):
    items, users = vectors
    rng = np.random.default_rng(5)
    for user in users[:20]:
        allowed = rng.random(len(items)) < 0.3
        exact, _ = top_n(items @ user, 40)
        excluded = exact[::2]  # the user's best tracks: the search has to go past them
        rows, _ = approximate_top_n(index, items, user, 20, excluded=excluded, allowed=allowed)
        assert len(rows) == 20
        assert allowed[rows].all()
        assert not np.isin(rows, excluded).any()


def test_a_selective_filter_asks_for_exact_scoring(vectors, index):
    items, users = vectors
    allowed = np.zeros(len(items), dtype=bool)
    allowed[:300] = True  # 300 eligible tracks
    assert approximate_top_n(index, items, users[0], 10, allowed=allowed, exact_below=500) is None
    # above the threshold the index answers, widening until the filter's share is found
    rows, _ = approximate_top_n(index, items, users[0], 10, allowed=allowed, exact_below=200)
    assert len(rows) == 10 and allowed[rows].all()


def test_rows_appended_after_the_build_are_scored(vectors, index):
    items, users = vectors
    best = np.full(
        (1, items.shape[1]), 50.0, dtype=np.float32
    )  # a new track better than any other for everyone positive
    extended = np.vstack([items, best])
    user = np.abs(users[0])
    rows, _ = approximate_top_n(index, extended, user, 5)
    assert rows[0] == len(items)


def test_bytes_round_trip_answers_the_same(vectors, index):
    items, users = vectors
    catalog = CatalogIndex(index, index)
    again = CatalogIndex.from_bytes(catalog.to_bytes())
    assert again.items.rows == len(items) and again.items.dimensions == items.shape[1]
    for user in users[:5]:
        assert np.array_equal(np.sort(again.items.search(user, 10)), np.sort(index.search(user, 10)))


def test_moments_give_the_catalog_z_scores(vectors):
    items, users = vectors
    moments = ScoreMoments.of(items)
    scores = items @ users[0]
    naive = (scores - scores.mean()) / scores.std()
    rows = np.array([0, 17, 999])
    assert np.allclose(moments.standardise(scores[rows], users[0]), naive[rows], atol=1e-4)


def test_tracks_ranked_high_by_their_bias_alone_are_found():
    """Short vectors with a large bias (the last coordinate; users have 1 there) top every list, and a
    greedy inner-product walk rarely reaches them: the index scores its bias head with every query."""
    rng = np.random.default_rng(8)
    items = np.hstack([rng.standard_normal((6000, 15)), np.zeros((6000, 1))]).astype(np.float32)
    favourites = rng.choice(6000, 5, replace=False)
    items[favourites, :-1] *= 0.01
    items[favourites, -1] = 40.0
    users = np.hstack([rng.standard_normal((30, 15)), np.ones((30, 1))]).astype(np.float32)
    index = InnerProductIndex.build(items, threads=1, bias_head=True)
    allowed = rng.random(6000) < 0.5
    for user in users:
        rows, _ = approximate_top_n(index, items, user, 10)
        assert set(favourites) <= set(rows.tolist())
        rows, _ = approximate_top_n(index, items, user, 10, allowed=allowed)
        assert set(favourites[allowed[favourites]]) <= set(rows.tolist()) and allowed[rows].all()


def test_index_bytes_of_another_format_are_refused(vectors, index):
    buffer = io.BytesIO()
    np.savez(buffer, graph=np.zeros(10, np.uint8), dimensions=np.int64(16))  # what the hnswlib release wrote
    with pytest.raises(UnknownIndexFormat, match="hnswlib"):
        InnerProductIndex.from_bytes(buffer.getvalue())


def test_search_depth_grows_with_the_catalog_unless_configured():
    from models.ann import DEFAULT_EF, MAX_EF, ef_for

    assert ef_for(20_000) == ef_for(200_000) == DEFAULT_EF
    assert ef_for(800_000) == 2 * DEFAULT_EF and ef_for(1_000_000) == 224
    assert ef_for(10**12) == MAX_EF
    assert ef_for(1_000_000, configured=60) == 60
