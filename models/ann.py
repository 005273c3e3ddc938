"""Approximate top-n by inner product over item vectors: an HNSW graph (hnswlib) plus the rules for
filters, exclusions and the exact fallback.

Served scores are ``item_vectors @ user_vector``; a model's item bias is already a coordinate of its
item vectors (the user has 1 there), so an inner-product index searches exactly the served score.
Measured on the default model's vectors (20,000 tracks x 64, 300 users; bench/ann_libraries.py),
recall@10 against exact at ef 50 / 100 / 200: hnswlib inner product 0.96 / 0.98 / 0.98 (257, 495,
772 us a query), Spotify's Voyager inner product 0.48 / 0.61 / 0.73 (492, 1051, 2130 us). Voyager's
inner-product space, like the textbook reduction to Euclidean distance with an extra coordinate
``sqrt(M² - |x|²)`` (0.50 / 0.62 / 0.76 with either library), crowds the graph when item norms vary
as a bias-carrying model's do; hnswlib searches the inner product directly.

Candidates are rescored exactly from the item vectors, so a returned score is the served score.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np

DEFAULT_EF = 100  # search depth: recall@10 0.98 on the default model's vectors (bench/ann_libraries.py)
MAX_EF = 4096  # widening stops here; past it the caller scores the allowed rows exactly


@dataclass
class InnerProductIndex:
    """An HNSW index over the first ``rows`` item vectors of a model version (a catalog extended
    since has more rows: those are scored exactly, see :func:`approximate_top_n`). Searches set the
    graph's depth: one searcher at a time (an API process ranks on its event loop)."""

    graph: hnswlib.Index
    rows: int

    @classmethod
    def build(
        cls, vectors: np.ndarray, threads: int = -1, m: int = 16, ef_construction: int = 100, seed: int = 1
    ) -> InnerProductIndex:
        """Index ``vectors`` (float32, n x d); ``threads`` -1: one per core."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
        graph.init_index(max_elements=max(1, len(vectors)), M=m, ef_construction=ef_construction, random_seed=seed)
        if len(vectors):
            graph.add_items(vectors, np.arange(len(vectors)), num_threads=threads)
        return cls(graph, len(vectors))

    @property
    def dimensions(self) -> int:
        return self.graph.dim

    def search(self, query: np.ndarray, k: int, ef: int = DEFAULT_EF) -> np.ndarray:
        """Rows of the (about) ``k`` items of the largest inner product with ``query``, unordered."""
        if 2 * k >= self.rows:  # most of the index: every row (the graph may not return k of so few)
            return np.arange(self.rows, dtype=np.int64)
        self.graph.set_ef(max(ef, k))
        try:
            labels, _ = self.graph.knn_query(np.asarray(query, dtype=np.float32), k=k, num_threads=1)
        except RuntimeError:  # the graph found fewer than k (hnswlib's "ef or M is too small"): every row
            return np.arange(self.rows, dtype=np.int64)
        return labels[0].astype(np.int64)

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.bin"
            self.graph.save_index(str(path))
            buffer = io.BytesIO()
            np.savez(buffer, graph=np.fromfile(path, dtype=np.uint8), dimensions=np.int64(self.dimensions))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> InnerProductIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as parts, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.bin"
            parts["graph"].tofile(path)
            graph = hnswlib.Index(space="ip", dim=int(parts["dimensions"]))
            graph.load_index(str(path))
        return cls(graph, graph.get_current_count())


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

    Over-fetches by the share of rows the filter allows (estimated from the mask) plus the exclusions,
    and doubles the depth until ``n`` survive. Returns None when the caller should score exactly: the
    filter allows fewer than ``exact_below`` rows (scoring those exactly costs less than the widening)
    or the widening reached ``MAX_EF`` without ``n`` eligible rows.
    """
    total = len(vectors)
    share = 1.0
    if allowed is not None:
        eligible = int(np.count_nonzero(allowed))
        if eligible < max(exact_below, n):
            return None
        share = eligible / total
    n_excluded = 0 if excluded is None else len(excluded)
    k = min(total, int((n + n_excluded) / share * 1.5) + 10)
    if k > MAX_EF:  # a search this deep costs more than scoring the allowed rows
        return None
    depth = max(ef, k)
    while True:
        rows = index.search(query, k, depth)
        if index.rows < total:  # tracks appended since the index was built: few, scored exactly
            rows = np.concatenate([rows, np.arange(index.rows, total, dtype=np.int64)])
        keep = np.ones(len(rows), dtype=bool)
        if allowed is not None:
            keep &= allowed[rows]
        if n_excluded:
            keep &= ~np.isin(rows, excluded)
        rows = rows[keep]
        if len(rows) >= n or k >= index.rows:
            scores = vectors[rows] @ query
            order = np.argsort(-scores, kind="stable")[:n]
            return rows[order], scores[order].astype(np.float32)
        if depth >= MAX_EF:
            return None
        k, depth = min(index.rows, k * 2), min(MAX_EF, depth * 2)


@dataclass
class CatalogIndex:
    """The ANN indexes of one model version: over its item vectors (``vectors @ user``: recommendations)
    and over its unit similarity vectors (cosine: similar tracks). Built at release, logged with the
    version, loaded with its vectors."""

    items: InnerProductIndex
    similarity: InnerProductIndex

    @classmethod
    def build(cls, item_vectors: np.ndarray, similarity_vectors: np.ndarray, threads: int = -1) -> CatalogIndex:
        """``similarity_vectors`` as the API holds them: unit rows."""
        return cls(InnerProductIndex.build(item_vectors, threads), InnerProductIndex.build(similarity_vectors, threads))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            items=np.frombuffer(self.items.to_bytes(), np.uint8),
            similarity=np.frombuffer(self.similarity.to_bytes(), np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CatalogIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as parts:
            return cls(
                InnerProductIndex.from_bytes(parts["items"].tobytes()),
                InnerProductIndex.from_bytes(parts["similarity"].tobytes()),
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
