"""Approximate top-n by inner product over item vectors: an HNSW graph (faiss's ``IndexHNSWFlat`` in
inner-product space) plus the rules for filters, exclusions and the exact fallback.

Served scores are ``item_vectors @ user_vector``; a model's item bias is already a coordinate of its
item vectors (the user has 1 there), so an inner-product index searches exactly the served score.
faiss ships wheels for every Python we support (no compiler at install, unlike hnswlib) and searches
with a filter inside the graph (an ``IDSelectorBitmap``): a filter allowing a fifth of the catalog is
followed by the search instead of over-fetching five times as many candidates and dropping them.
Measured on the default model's vectors (20,000 tracks x 64, 300 users; ``python -m bench.ann_libraries``):
recall@10 against exact at ef 50 / 100 / 200: faiss 0.968 / 0.977 / 0.983, hnswlib 0.970 / 0.983 /
0.986, usearch 0.972 / 0.981 / 0.986, Voyager 0.48 / 0.61 / 0.73 (its inner-product space crowds the
graph when item norms vary as a bias-carrying model's do).

The graph alone misses a few tracks that many listeners rank high: those whose score comes from the
item-bias coordinate (the last one; users have 1 there) rather than from a long vector, which a greedy
inner-product walk rarely reaches. The index keeps the ``HEAD`` rows of largest bias and scores them
exactly with every query (64 dot products): at 200,000 tracks, recall@10 0.947 -> 0.980 unfiltered and
0.889 -> 0.942 with a random fifth of the catalog allowed (M 32, ef 100).

Candidates are rescored exactly from the item vectors, so a returned score is the served score.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import faiss
import numpy as np

DEFAULT_EF = 100  # search depth: recall@10 0.98 on the default model's vectors (bench/ann_libraries.py)
EF_MEASURED_TRACKS = 200_000  # the largest catalog DEFAULT_EF was measured on (recall@10 ~0.98, 0.94 a fifth allowed)
MAX_EF = 4096  # widening stops here; past it the caller scores the allowed rows exactly
HEAD = 128  # rows of largest item bias scored with every query (see above)
FORMAT = "faiss-hnsw-ip-1"  # what :meth:`InnerProductIndex.to_bytes` writes; other bytes are refused


class UnknownIndexFormat(ValueError):
    """Index bytes written by another library or format (an index logged by an older release)."""


def ef_for(n_items: int, configured: int | None = None) -> int:
    """The search depth for a catalog of ``n_items`` tracks: ``configured`` when set, else ``DEFAULT_EF``
    up to ``EF_MEASURED_TRACKS`` tracks and growing with the square root of the size past it (an HNSW
    walk's misses grow with the graph; 224 at 1,000,000 tracks, to be confirmed by bench/serving.py's
    recall run alone at that size), at most ``MAX_EF``."""
    if configured is not None:
        return configured
    scale = max(1.0, n_items / EF_MEASURED_TRACKS) ** 0.5
    return min(MAX_EF, int(round(DEFAULT_EF * scale)))


@dataclass
class InnerProductIndex:
    """An HNSW index over the first ``rows`` item vectors of a model version (a catalog extended
    since has more rows: those are scored exactly, see :func:`approximate_top_n`)."""

    graph: faiss.IndexHNSWFlat
    rows: int
    head: np.ndarray  # rows searched with every query besides the graph's (int64, sorted)

    @classmethod
    def build(
        cls, vectors: np.ndarray, threads: int = -1, m: int = 32, ef_construction: int = 100, bias_head: bool = False
    ) -> InnerProductIndex:
        """Index ``vectors`` (float32, n x d); ``threads`` -1: one per core. ``bias_head``: the last
        coordinate is an item bias, and the ``HEAD`` rows of largest bias are searched with every query."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        graph = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        if len(vectors):
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(threads if threads > 0 else len(os.sched_getaffinity(0)))
            try:
                graph.add(vectors)
            finally:
                faiss.omp_set_num_threads(before)
        head = np.empty(0, dtype=np.int64)
        if bias_head and len(vectors) > HEAD:
            head = np.sort(np.argpartition(-vectors[:, -1], HEAD)[:HEAD]).astype(np.int64)
        return cls(graph, len(vectors), head)

    @property
    def dimensions(self) -> int:
        return self.graph.d

    def search(self, query: np.ndarray, k: int, ef: int = DEFAULT_EF, allowed: np.ndarray | None = None) -> np.ndarray:
        """Rows of the (about) ``k`` items of the largest inner product with ``query``, unordered; with
        ``allowed`` (a boolean mask over at least the indexed rows) only rows it allows."""
        if 2 * k >= self.rows:  # most of the index: every row (the graph may not return k of so few)
            rows = np.arange(self.rows, dtype=np.int64)
            return rows if allowed is None else rows[allowed[: self.rows]]
        bitmap = None
        if allowed is None:
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
        else:
            bitmap = np.packbits(allowed[: self.rows], bitorder="little")
            params = faiss.SearchParametersHNSW(
                efSearch=max(ef, k), sel=faiss.IDSelectorBitmap(self.rows, faiss.swig_ptr(bitmap))
            )
        _, labels = self.graph.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, params=params)
        del bitmap  # alive until here: the selector points into it
        found = labels[0]
        found = found[found >= 0].astype(np.int64)
        if not len(self.head):
            return found
        head = self.head if allowed is None else self.head[allowed[self.head]]
        return np.union1d(found, head)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, graph=faiss.serialize_index(self.graph), head=self.head, format=np.array(FORMAT))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> InnerProductIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as parts:
            written = str(parts["format"]) if "format" in parts.files else "hnswlib"
            if written != FORMAT:
                raise UnknownIndexFormat(f"ANN index bytes in format {written!r}, this release reads {FORMAT!r}")
            graph = faiss.deserialize_index(parts["graph"])
            head = parts["head"].astype(np.int64)
        return cls(graph, graph.ntotal, head)


def approximate_top_n(
    index: InnerProductIndex,
    vectors: np.ndarray,
    query: np.ndarray,
    n: int,
    excluded: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    exact_below: int = 0,
    ef: int = DEFAULT_EF,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The best ``n`` rows of ``vectors @ query`` and their scores, best first, never an ``excluded``
    row nor one ``allowed`` (a boolean mask) leaves out; fewer when fewer are eligible.

    The filter is followed inside the graph; the search is made deeper by the share of rows it leaves
    out (a fifth of the catalog allowed: five times ``ef``), over-fetches by the exclusions, and doubles
    the depth until ``n`` survive. Returns None when the caller should score exactly: the filter allows
    fewer than ``exact_below`` rows (scoring those exactly costs less than the widening) or the
    widening reached ``MAX_EF`` without ``n`` eligible rows.
    """
    total = len(vectors)
    share = 1.0
    if allowed is not None:
        eligible = int(np.count_nonzero(allowed))
        if eligible < max(exact_below, n):
            return None
        share = eligible / total
    n_excluded = 0 if excluded is None else len(excluded)
    k = min(total, n + n_excluded + 10)
    depth = min(MAX_EF, max(ef, int(ef / share), k))
    while True:
        rows = index.search(query, k, depth, allowed)
        if index.rows < total:  # tracks appended since the index was built: few, scored exactly
            appended = np.arange(index.rows, total, dtype=np.int64)
            rows = np.concatenate([rows, appended if allowed is None else appended[allowed[index.rows :]]])
        if n_excluded:
            rows = rows[~np.isin(rows, excluded)]
        if len(rows) >= n or k >= index.rows:
            scores = vectors[rows] @ query
            order = np.argsort(-scores, kind="stable")[:n]
            return rows[order], scores[order].astype(np.float32)
        if depth >= MAX_EF:
            return None
        k, depth = min(index.rows, k * 2), min(MAX_EF, max(depth * 2, k * 2))


@dataclass
class CatalogIndex:
    """The ANN indexes of one model version: over its item vectors (``vectors @ user``: recommendations),
    its unit similarity vectors (cosine: similar tracks) and its unit content vectors (cosine to a seed
    profile: listeners with seeds or history but no vector; None in an index logged before it, whose
    content lists are scored exactly). Built at release, logged with the version, loaded with its vectors."""

    items: InnerProductIndex
    similarity: InnerProductIndex
    content: InnerProductIndex | None = None

    @classmethod
    def build(
        cls,
        item_vectors: np.ndarray,
        similarity_vectors: np.ndarray,
        content_vectors: np.ndarray | None = None,
        threads: int = -1,
    ) -> CatalogIndex:
        """``similarity_vectors`` and ``content_vectors`` as the API holds them: unit rows."""
        return cls(
            InnerProductIndex.build(item_vectors, threads, bias_head=True),
            InnerProductIndex.build(similarity_vectors, threads),
            None if content_vectors is None else InnerProductIndex.build(content_vectors, threads),
        )

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        parts = {"items": self.items, "similarity": self.similarity, "content": self.content}
        np.savez(buffer, **{name: np.frombuffer(i.to_bytes(), np.uint8) for name, i in parts.items() if i is not None})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CatalogIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as parts:
            return cls(
                InnerProductIndex.from_bytes(parts["items"].tobytes()),
                InnerProductIndex.from_bytes(parts["similarity"].tobytes()),
                InnerProductIndex.from_bytes(parts["content"].tobytes()) if "content" in parts.files else None,
            )


@dataclass(frozen=True)
class ScoreMoments:
    """Mean and covariance of a matrix's rows: the mean and standard deviation of ``matrix @ q`` over
    all rows for any ``q`` without scoring them (z-scores of a few candidates, see /similar)."""

    mean: np.ndarray
    covariance: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray) -> ScoreMoments:
        m = np.asarray(matrix, dtype=np.float64)
        mean = m.mean(axis=0)
        return cls(mean, (m.T @ m) / len(m) - np.outer(mean, mean))

    def standardise(self, scores: np.ndarray, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float64)
        std = float(np.sqrt(max(q @ self.covariance @ q, 0.0)))
        return (scores - float(self.mean @ q)) / (std if std > 0 else 1.0)
