"""Top lists from scores: exact over the whole catalog, or through the version's ANN index.

A catalog served with an ANN index (``ECHOTUNE_ANN_MIN_TRACKS`` tracks and more, see
:mod:`models.ann`) finds a known user's list and similar tracks through it instead of scoring every
track: over-fetched, filtered, widened until the list is full, and scored exactly when a filter leaves
fewer than ``ann_min_tracks`` tracks (scoring those costs less than searching past them) or the
widening gives up.

A popularity list (a cold user, the popularity arm of an experiment, the degraded path) walks the
version's popularity order, built once at load, skipping excluded rows and rows a filter leaves out:
about ``count / share allowed`` rows visited instead of ranking the catalog, and the rows a selective
filter allows ranked exactly once the walk passes ``_walk_limit`` rows. A cold user who names genres gets
the order walked among those genres first, then the rest.
"""

from __future__ import annotations

import numpy as np

from core.settings import Settings
from models.ann import approximate_top_n, ef_for
from models.ranking import first_in_order, top_n
from serving.filters import RecommendationFilters, allowed_mask, diversify
from serving.loaded_model import LoadedModel

PERSONAL_WEIGHT = 0.25  # similar-tracks: how much the user's taste moves the ranking


def select(
    model: LoadedModel,
    scores: np.ndarray,
    filters: RecommendationFilters,
    count: int,
    excluded: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``count`` rows of ``scores`` (one per item) the filters allow, and their scores."""
    mask = allowed_mask(model, filters) if mask is None else mask
    cap = filters.max_per_artist
    if cap is None:
        return top_n(scores, count, excluded=excluded, allowed=mask)
    # diversity: pick from a deeper pool, eight times deeper while one artist dominates it (the ranking
    # sorted no deeper than the list needs), up to the whole ranking
    pool = min(model.n_items, count * 8)
    while True:
        ranked = top_n(scores, pool, excluded=excluded, allowed=mask)
        rows, top = diversify(*ranked, model.first_artist, cap, count)
        if len(rows) == count or len(ranked[0]) < pool or pool >= model.n_items:
            return rows, top
        pool = min(model.n_items, pool * 8)


def popularity_scores(model: LoadedModel, first_genres: tuple[str, ...] = ()) -> np.ndarray:
    """The popularity path's score of every row (the exact path): popularity, lifted above every other
    row for tracks of ``first_genres``."""
    scores = model.popularity
    if first_genres:
        scores = scores + model.genre_mask(first_genres) * _genre_lift(model)
    return scores


def _genre_lift(model: LoadedModel) -> float:
    return float(model.popularity.max(initial=0.0)) + 1.0


def _walk_limit(count: int, n_excluded: int) -> int:
    # a filter allowing less than 1/64 of the catalog: ranking its rows costs less than walking on
    return max(4096, 64 * (count + n_excluded))


def select_popular(
    model: LoadedModel,
    filters: RecommendationFilters,
    count: int,
    excluded: np.ndarray,
    first_genres: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` most popular rows the filters allow, tracks of ``first_genres`` first, and their
    scores (those of :func:`popularity_scores`): what ``select(model, popularity_scores(...), ...)``
    returns (ties broken by row), without ranking the catalog."""
    mask = allowed_mask(model, filters)
    allowed = () if mask is None else (mask,)
    first = model.genre_mask(first_genres) if first_genres else None
    cap = filters.max_per_artist
    pool = count if cap is None else min(model.n_items, count * 8)
    while True:
        rows = _popular_rows(model, pool, excluded, allowed, first)
        if first is None:
            scores = model.popularity[rows]
        else:
            scores = model.popularity[rows] + first[rows] * _genre_lift(model)
        scores = scores.astype(np.float32)
        if cap is None:
            return rows, scores
        kept, top = diversify(rows, scores, model.first_artist, cap, count)
        if len(kept) == count or len(rows) < pool or pool >= model.n_items:
            return kept, top
        pool = min(model.n_items, pool * 8)


def _popular_rows(
    model: LoadedModel, n: int, excluded: np.ndarray, allowed: tuple[np.ndarray, ...], first: np.ndarray | None
) -> np.ndarray:
    if first is None:
        return _walk(model, n, excluded, allowed, None)
    leading = _walk(model, n, excluded, (*allowed, first), None)
    if len(leading) == n:
        return leading
    return np.concatenate([leading, _walk(model, n - len(leading), excluded, allowed, first)])


def _walk(
    model: LoadedModel, n: int, excluded: np.ndarray, allowed: tuple[np.ndarray, ...], skipped: np.ndarray | None
) -> np.ndarray:
    """The first ``n`` eligible rows of the popularity order; past the walk's limit, the eligible rows
    found from the masks and ranked exactly (the same order: popularity, then row)."""
    limit = _walk_limit(n, len(excluded))
    rows = first_in_order(model.popularity_order, n, excluded, allowed, skipped, limit)
    if rows is not None:
        return rows
    keep = np.logical_and.reduce(allowed) if allowed else np.ones(model.n_items, dtype=bool)
    if skipped is not None:
        keep = keep & ~skipped
    rows = np.flatnonzero(keep)
    if len(excluded):
        rows = rows[~np.isin(rows, excluded)]
    return rows[np.argsort(-model.popularity[rows], kind="stable")[:n]].astype(np.int64)


def select_by_vector(
    model: LoadedModel,
    query: np.ndarray,
    filters: RecommendationFilters,
    count: int,
    excluded: np.ndarray,
    settings: Settings,
    space: str = "items",
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``count`` rows of ``vectors @ query`` through the version's ANN index of that space
    (``items``: ``model.vectors``, a user's list; ``content``: ``model.content``, a profile of seed
    tracks); exact when the index cannot fill the list."""
    index, vectors = (model.ann.content, model.content) if space == "content" else (model.ann.items, model.vectors)
    mask = allowed_mask(model, filters)
    cap = filters.max_per_artist
    pool = count if cap is None else min(model.n_items, count * 8)
    # an artist cap one artist fills: a pool eight times deeper, up to 512 per track asked, before the exact path
    deepest = min(model.n_items, count * 512)
    while True:
        found = _search(model, index, vectors, query, pool, excluded, mask, settings)
        if found is None:
            break
        if cap is None:
            return found
        rows, top = diversify(*found, model.first_artist, cap, count)
        if len(rows) == count:
            return rows, top
        if pool >= deepest:
            break
        pool = min(deepest, pool * 8)
    if mask is not None:  # a selective filter: score only the rows it allows
        return _exact_among(model, vectors, np.flatnonzero(mask), query, count, excluded, cap)
    return select(model, vectors @ query, filters, count, excluded)


def _exact_among(
    model: LoadedModel,
    vectors: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    count: int,
    excluded: np.ndarray,
    cap: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``count`` of ``rows`` by ``vectors @ query``, none ``excluded``, at most ``cap`` per
    artist."""
    scores = vectors[rows] @ query
    keep = ~np.isin(rows, excluded) if len(excluded) else None
    top, best = top_n(scores, count if cap is None else len(rows), allowed=keep)
    if cap is None:
        return rows[top], best
    return diversify(rows[top], best, model.first_artist, cap, count)


def similar_rows(
    model: LoadedModel,
    row: int,
    vector: np.ndarray | None,
    filters: RecommendationFilters,
    count: int,
    excluded: np.ndarray,
    settings: Settings,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks like item ``row``: score = z(cosine of similarity vectors) + 0.25 z(user score) when the
    user's ``vector`` is known, z over the whole catalog. Through the ANN index of similarity vectors
    (unless ``exact``): the most similar tracks, over-fetched 4x when personalised, ranked by the same
    score with z from the catalog's score moments."""
    if model.ann is not None and not exact:
        found = _similar_approximate(model, row, vector, filters, count, excluded, settings)
        if found is not None:
            return found
    scores = _standardise(model.similarity @ model.similarity[row])
    if vector is not None:
        scores = scores + PERSONAL_WEIGHT * _standardise(model.vectors @ vector)
    return select(model, scores, filters, count, excluded)


def _similar_approximate(
    model: LoadedModel,
    row: int,
    vector: np.ndarray | None,
    filters: RecommendationFilters,
    count: int,
    excluded: np.ndarray,
    settings: Settings,
) -> tuple[np.ndarray, np.ndarray] | None:
    mask = allowed_mask(model, filters)
    cap = filters.max_per_artist
    pool = min(model.n_items, (count if cap is None else count * 8) * (1 if vector is None else 4))
    deepest = min(model.n_items, count * 512)  # an artist cap one artist fills: eightfold deeper up to here
    query = model.similarity[row]
    while True:
        found = _search(model, model.ann.similarity, model.similarity, query, pool, excluded, mask, settings)
        if found is None:
            return None
        rows, similarity = found
        scores = model.similarity_moments.standardise(similarity, query)
        if vector is not None:
            scores = scores + PERSONAL_WEIGHT * model.vector_moments.standardise(model.vectors[rows] @ vector, vector)
        order = np.argsort(-scores, kind="stable")
        rows, scores = rows[order], scores[order].astype(np.float32)
        if cap is None:
            return rows[:count], scores[:count]
        kept, top = diversify(rows, scores, model.first_artist, cap, count)
        if len(kept) == count:
            return kept, top
        if pool >= deepest:
            return None
        pool = min(deepest, pool * 8)


def _standardise(values: np.ndarray) -> np.ndarray:
    std = float(values.std())
    return (values - float(values.mean())) / (std if std > 0 else 1.0)


def _search(model, index, vectors, query, pool, excluded, mask, settings: Settings):
    """One ANN search of ``model``'s catalog with the settings' exact threshold and the depth for its size."""
    return approximate_top_n(
        index, vectors, query, pool, excluded, mask, settings.ann_min_tracks, ef_for(model.n_items, settings.ann_ef)
    )
