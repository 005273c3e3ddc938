"""Every served path on a small catalog against the exact result (scores over the whole catalog):
the popularity order walked with filters, exclusions, an artist cap and a cold user's genres first, and
that the walk never ranks the whole catalog; seeded lists through the content index; the cached filter
masks."""

import functools

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from core.vectorstore import PublishedVersion
from models import ranking
from models.ann import CatalogIndex
from models.features import CONTINUOUS_FEATURES
from serving import retrieval
from serving.filters import RecommendationFilters, allowed_mask
from serving.loaded_model import LoadedModel
from serving.retrieval import popularity_scores, select, select_by_vector, select_popular, similar_rows

N = 3_000
GENRES = ["rock", "jazz", "pop", "folk", "metal"]


@functools.cache
def catalog(seed: int = 7, distinct: bool = True) -> LoadedModel:
    """N tracks: popularity distinct (``distinct``) or in a few tied levels, five genres (rock on about
    a fifth), a third explicit, 40 artists of which artist 0 holds the most popular tracks."""
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(N).astype(np.float32) / 100 if distinct else rng.integers(0, 6, N).astype(np.float32)
    artists = [["a0"] if p > np.quantile(popularity, 0.97) else [f"a{rng.integers(1, 40)}"] for p in popularity]
    audio = {f: rng.random(N).astype(np.float32) for f in CONTINUOUS_FEATURES if f != "tempo"}
    items = pd.DataFrame(
        {
            **audio,
            "track_id": [f"{i:022d}" for i in range(N)],
            "name": [f"t{i}" for i in range(N)],
            "artists": [["x"]] * N,
            "artist_ids": artists,
            "genres": [[GENRES[i % 5]] + (["pop"] if i % 7 == 0 else []) for i in range(N)],
            "explicit": rng.random(N) < 0.33,
            "popularity": popularity,
        }
    )
    vectors = rng.normal(size=(N, 8)).astype(np.float32)
    return LoadedModel.from_published(PublishedVersion("1", items, vectors, {"algorithm": "lowrank_ease"}))


def exact(model, filters, count, excluded, first=()):
    """The old path: scores for every row, ranked by top_n (ties: any order among equals)."""
    return select(model, popularity_scores(model, first), filters, count, excluded)


FILTERS = [
    RecommendationFilters(),
    RecommendationFilters(genres=["rock"]),
    RecommendationFilters(genres=["rock", "JAZZ"], explicit=False),
    RecommendationFilters(explicit=False, exclude_artists=["a0"]),
    RecommendationFilters(audio={"tempo": {"min": 100}}),  # no tempo known: allows nothing
    RecommendationFilters(max_per_artist=2),
    RecommendationFilters(genres=["metal"], max_per_artist=1),
    RecommendationFilters(genres=["no-such-genre"]),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: f.model_dump_json(exclude_defaults=True))
@pytest.mark.parametrize("first", [(), ("jazz",), ("folk", "pop")])
def test_the_popularity_walk_equals_the_exact_ranking(filters, first):
    model = catalog()
    rng = np.random.default_rng(1)
    excluded = np.unique(np.concatenate([model.popularity_order[:15], rng.choice(N, 40, replace=False)]))
    for count in (1, 10, 50):
        rows, scores = select_popular(model, filters, count, excluded, first)
        want_rows, want_scores = exact(model, filters, count, excluded, first)
        assert rows.tolist() == want_rows.tolist()  # distinct popularity: one right answer
        np.testing.assert_array_equal(scores, want_scores)
        assert scores.dtype == np.float32


def test_ties_in_popularity_give_the_same_scores_and_only_allowed_rows():
    model = catalog(distinct=False)
    filters = RecommendationFilters(genres=["rock"], explicit=False)
    excluded = model.popularity_order[:30]
    rows, scores = select_popular(model, filters, 40, excluded, ("jazz",))
    _, want_scores = exact(model, filters, 40, excluded, ("jazz",))
    np.testing.assert_array_equal(scores, want_scores)
    mask = allowed_mask(model, filters)
    assert mask[rows].all() and not np.isin(rows, excluded).any() and len(set(rows.tolist())) == 40


def test_a_selective_filter_past_the_walk_limit_is_ranked_exactly(monkeypatch):
    model = catalog()
    monkeypatch.setattr(retrieval, "_walk_limit", lambda count, n_excluded: 64)  # the walk gives up at once
    for filters in FILTERS:
        rows, scores = select_popular(model, filters, 10, np.array([5, 6], dtype=np.int64), ("jazz",))
        want_rows, want_scores = exact(model, filters, 10, np.array([5, 6], dtype=np.int64), ("jazz",))
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_array_equal(scores, want_scores)


def test_the_popularity_path_never_ranks_the_whole_catalog(monkeypatch):
    """The regression behind requests through the demo's popularity arm at 0.30x the floor (issue 25):
    each one ranked every track (an argpartition of 1M per request)."""
    model = catalog()
    visited = []
    walk = ranking.first_in_order

    def counting(order, n, *args, **kwargs):
        rows = walk(order, n, *args, **kwargs)
        visited.append(n)
        return rows

    def refuse(*args, **kwargs):
        raise AssertionError("top_n over the catalog on the popularity path")

    monkeypatch.setattr(retrieval, "top_n", refuse)
    monkeypatch.setattr(retrieval, "first_in_order", counting)
    for filters in FILTERS[:4]:
        rows, _ = select_popular(model, filters, 10, model.popularity_order[:5], ("jazz",))
        assert len(rows) == 10
    assert visited


def test_first_in_order_visits_rows_in_proportion_to_the_list():
    order = np.arange(1_000_000, dtype=np.int64)
    allowed = np.zeros(1_000_000, dtype=bool)
    allowed[::5] = True  # a fifth of the catalog
    seen = []

    class Watched(np.ndarray):
        def __getitem__(self, key):
            if isinstance(key, slice):
                seen.append(len(range(*key.indices(len(self)))))
            return super().__getitem__(key)

    rows = ranking.first_in_order(order.view(Watched), 20, np.array([0, 5], dtype=np.int64), (allowed,))
    assert np.asarray(rows).tolist() == list(range(10, 110, 5))
    assert sum(seen) < 1_000  # a few chunks of 64 and 128, not a million rows
    assert ranking.first_in_order(order, 20, None, (np.zeros(1_000_000, dtype=bool),), limit=500) is None


def test_filter_masks_are_cached_read_only_and_never_leak_between_requests():
    model = catalog(seed=8)
    rock = RecommendationFilters(genres=["Rock"], explicit=False)
    first = allowed_mask(model, rock)
    assert allowed_mask(model, RecommendationFilters(genres=["rock"], explicit=False)) is first
    assert not first.flags.writeable
    narrowed = allowed_mask(model, RecommendationFilters(genres=["rock"], explicit=False, exclude_artists=["a0"]))
    assert narrowed is not first and narrowed.sum() < first.sum()
    assert allowed_mask(model, rock).sum() == first.sum()  # the copy was narrowed, not the cached mask
    for i in range(50):  # made-up genres leave nothing behind in the cache
        allowed_mask(model, RecommendationFilters(genres=[f"made-up-{i}"]))
    assert model.catalog_mask.cache_info().currsize <= 8
    want = np.zeros(N, dtype=bool)
    want[model.genre_rows["rock"]] = True
    np.testing.assert_array_equal(first, want & ~model.explicit)


@functools.cache
def indexed_catalog() -> LoadedModel:
    model = catalog(seed=9)
    model.attach_index(CatalogIndex.build(model.vectors, model.similarity, model.content, threads=1))
    return model


@pytest.mark.parametrize("filters", FILTERS[:4] + FILTERS[5:7], ids=lambda f: f.model_dump_json(exclude_defaults=True))
def test_a_seeded_list_through_the_content_index_equals_the_exact_one(filters):
    """Listeners with seeds but no vector: cosine to the seeds' profile through the content index, not
    ``content @ profile`` over the whole catalog."""
    model = indexed_catalog()
    settings = Settings(ann_min_tracks=50, ann_ef=400)  # deep enough that 3,000 tracks are found exactly
    rng = np.random.default_rng(3)
    for _ in range(5):
        seeds = rng.choice(N, 3, replace=False)
        profile = model.content[seeds].mean(axis=0)
        excluded = np.sort(seeds).astype(np.int64)
        rows, scores = select_by_vector(model, profile, filters, 10, excluded, settings, space="content")
        want_rows, want_scores = select(model, model.content @ profile, filters, 10, excluded)
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_the_content_path_searches_the_content_index(monkeypatch):
    model = indexed_catalog()
    searched = []
    search = type(model.ann.content).search
    monkeypatch.setattr(
        type(model.ann.content), "search", lambda self, *a, **k: searched.append(self) or search(self, *a, **k)
    )
    profile = model.content[:2].mean(axis=0)
    select_by_vector(
        model, profile, RecommendationFilters(), 10, np.array([0, 1]), Settings(ann_min_tracks=50), "content"
    )
    assert searched and all(s is model.ann.content for s in searched)


def test_an_index_without_content_vectors_still_loads():
    """An index logged before the content index: the content path is scored exactly."""
    model = catalog(seed=10)
    index = CatalogIndex.build(model.vectors, model.similarity, threads=1)
    again = CatalogIndex.from_bytes(index.to_bytes())
    assert again.content is None
    model.attach_index(again)
    assert model.ann.items.rows == N
    with_content = CatalogIndex.from_bytes(
        CatalogIndex.build(model.vectors, model.similarity, model.content, 1).to_bytes()
    )
    assert with_content.content.rows == N and with_content.content.dimensions == model.content.shape[1]


def test_an_artist_cap_one_artist_fills_widens_the_index_search_not_the_catalog(monkeypatch):
    model = catalog(seed=11)
    model.attach_index(CatalogIndex.build(model.vectors, model.similarity, threads=1))
    query = model.vectors[0]
    order = np.argsort(-(model.vectors @ query), kind="stable")
    artists = np.arange(N, dtype=np.int64) + 1000
    artists[order[:150]] = 7  # the 150 best tracks for this query: one artist
    model.first_artist = artists
    filters = RecommendationFilters(max_per_artist=1)
    settings = Settings(ann_min_tracks=50, ann_ef=400)
    want_rows, want_scores = select(model, model.vectors @ query, filters, 10, np.empty(0, dtype=np.int64))

    def refuse(*args, **kwargs):
        raise AssertionError("scored the whole catalog")

    monkeypatch.setattr(retrieval, "select", refuse)
    rows, scores = select_by_vector(model, query, filters, 10, np.empty(0, dtype=np.int64), settings)
    assert rows.tolist() == want_rows.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_similar_tracks_under_an_artist_cap_one_artist_fills_stay_in_the_index(monkeypatch):
    model = catalog(seed=12)
    model.attach_index(CatalogIndex.build(model.vectors, model.similarity, threads=1))
    order = np.argsort(-(model.similarity @ model.similarity[0]), kind="stable")
    artists = np.arange(N, dtype=np.int64) + 1000
    artists[order[:150]] = 7  # the 150 tracks most like track 0: one artist
    model.first_artist = artists
    filters, settings = RecommendationFilters(max_per_artist=1), Settings(ann_min_tracks=50, ann_ef=400)
    excluded = np.array([0], dtype=np.int64)
    want_rows, want_scores = similar_rows(model, 0, None, filters, 10, excluded, settings, exact=True)

    def refuse(*args, **kwargs):
        raise AssertionError("scored the whole catalog")

    monkeypatch.setattr(retrieval, "select", refuse)
    rows, scores = similar_rows(model, 0, None, filters, 10, excluded, settings)
    assert rows.tolist() == want_rows.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-3, atol=1e-4)
