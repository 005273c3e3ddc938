"""Properties of the top-k selections, on inputs hypothesis draws: the batch ``top_k`` (evaluation) and
the one-row ``top_n`` (the serving hot path) choose the same list; the ANN search's list is always
eligible, distinct, best first and scored exactly, and is the exact list when it searched every row;
the metrics' vectorised hit test agrees with the row-by-row one it replaced."""

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.ann import InnerProductIndex, approximate_top_n
from models.evaluation import metrics
from models.ranking import top_k, top_n

FAST = settings(max_examples=80, deadline=None)


@st.composite
def rows_with_filters(draw, max_items: int = 60):
    """Distinct scores of one row (ties would let both selections pick either track), an allowed mask,
    excluded indices and a k (at times above the row's length)."""
    n = draw(st.integers(1, max_items))
    scores = draw(hnp.arrays(np.float32, n, elements=st.floats(-1e3, 1e3, width=32), unique=True))
    allowed = draw(st.none() | hnp.arrays(np.bool_, n))
    excluded = np.array(sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))), dtype=np.int64)
    k = draw(st.integers(1, n + 5))
    return scores, allowed, excluded, k


@FAST
@given(rows_with_filters())
def test_the_batch_and_the_single_row_top_k_choose_the_same_list(case):
    scores, allowed, excluded, k = case
    exclude = sp.csr_matrix(
        (np.ones(len(excluded)), (np.zeros(len(excluded), dtype=np.int64), excluded)), shape=(1, len(scores))
    )
    batch_rows, batch_scores = top_k(scores[None, :], k, exclude=exclude, allowed=allowed)
    rows, best = top_n(scores, k, excluded=excluded, allowed=allowed)
    kept = batch_rows[0] >= 0  # top_k pads to k with -1 / -inf
    np.testing.assert_array_equal(batch_rows[0][kept], rows)
    np.testing.assert_array_equal(batch_scores[0][kept], best)
    assert np.isneginf(batch_scores[0][~kept]).all() and not kept[kept.sum() :].any()  # padding only at the end
    eligible = np.ones(len(scores), dtype=bool) if allowed is None else allowed.copy()
    eligible[excluded] = False
    assert len(rows) == min(k, int(eligible.sum()))
    assert eligible[rows].all() and np.all(np.diff(best) < 0)
    left_out = eligible.copy()
    left_out[rows] = False
    assert len(rows) == 0 or scores[left_out].max(initial=-np.inf) < best[-1]  # nothing better left out


@st.composite
def catalogs(draw):
    """A small catalog of vectors, a query, and a request: n, exclusions, a filter."""
    rows, dims = draw(st.integers(2, 120)), draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dims)).astype(np.float32)
    query = rng.standard_normal(dims).astype(np.float32)
    n = draw(st.integers(1, 30))
    excluded = np.array(sorted(draw(st.sets(st.integers(0, rows - 1), max_size=rows // 2))), dtype=np.int64)
    allowed = rng.random(rows) < draw(st.floats(0.2, 1.0)) if draw(st.booleans()) else None
    return vectors, query, n, excluded, allowed


@settings(max_examples=60, deadline=None)
@given(catalogs())
def test_the_ann_list_is_eligible_distinct_best_first_and_exact_when_the_whole_index_is_searched(case):
    vectors, query, n, excluded, allowed = case
    index = InnerProductIndex.build(vectors, threads=1)
    found = approximate_top_n(index, vectors, query, n, excluded=excluded, allowed=allowed)
    eligible = np.ones(len(vectors), dtype=bool) if allowed is None else allowed.copy()
    eligible[excluded] = False
    if (
        found is None
    ):  # the caller scores exactly: here (no search deeper than MAX_EF) only when the filter leaves fewer than n rows
        assert allowed is not None and allowed.sum() < n
        return
    rows, scores = found
    assert len(rows) == min(n, int(eligible.sum()))  # widened until the list is full, or every row was searched
    assert len(set(rows.tolist())) == len(rows) and eligible[rows].all()
    np.testing.assert_allclose(scores, vectors[rows] @ query, rtol=1e-5, atol=1e-5)  # the scores served are exact
    assert np.all(np.diff(scores) <= 0)
    if len(vectors) <= 2 * n:  # a search this wide returns every row: the list is the exact one
        exact_rows, exact_scores = top_n(vectors @ query, n, excluded=excluded, allowed=eligible)
        assert set(rows.tolist()) == set(exact_rows.tolist())
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)


def _hits_row_by_row(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """The hit test as it was written before (one isin per row): the reference."""
    relevant = sp.csr_matrix(relevant)
    hits = np.zeros(recommended.shape, dtype=bool)
    for u in range(recommended.shape[0]):
        row = relevant.indices[relevant.indptr[u] : relevant.indptr[u + 1]]
        hits[u] = np.isin(recommended[u], row) & (recommended[u] >= 0)
    return hits


@st.composite
def lists_and_clicks(draw):
    """Lists (-1 pads), and a relevance matrix given as unsorted coordinates with repeats and stored zeros."""
    users, items, k = draw(st.integers(1, 12)), draw(st.integers(1, 25)), draw(st.integers(1, 8))
    recommended = draw(hnp.arrays(np.int64, (users, k), elements=st.integers(-1, items - 1)))
    cells = draw(
        st.lists(
            st.tuples(st.integers(0, users - 1), st.integers(0, items - 1), st.sampled_from([0.0, 1.0, 2.0])),
            max_size=40,
        )
    )
    rows, cols, values = (
        (np.array(x) for x in zip(*cells)) if cells else (np.array([], int), np.array([], int), np.array([]))
    )
    relevant = sp.csr_matrix((values, (rows, cols)), shape=(users, items))
    relevant.has_sorted_indices = False  # as an arbitrary caller's matrix may be
    return recommended, relevant


@FAST
@given(lists_and_clicks())
def test_the_vectorised_hit_test_agrees_with_the_row_loop(case):
    recommended, relevant = case
    before = (relevant.indices.copy(), relevant.indptr.copy())
    hits, n_relevant = metrics._hits(recommended, relevant)
    np.testing.assert_array_equal(hits, _hits_row_by_row(recommended, relevant))
    np.testing.assert_array_equal(n_relevant, np.diff(relevant.indptr))
    np.testing.assert_array_equal(relevant.indices, before[0])  # the caller's matrix is left as it was
    np.testing.assert_array_equal(relevant.indptr, before[1])
