"""Low-rank EASE with feature-based cold start: the default algorithm.

EASE (Steck 2019) learns an item-item matrix ``B`` in closed form; for a training user its scores on
unplayed items are a spectral filter of the SVD ``X = Q S Vᵀ``: by the Woodbury identity, with
``P = (XᵀX + λI)⁻¹`` and ``γ_j = 1 / P_jj``,

    score(u, j) = x_u V diag(s² / (s² + λ)) Vᵀ e_j γ_j / λ      (j not played by u)

Keeping the top ``r`` singular directions turns this into a dot-product model of dimension ``r`` with
an exact fold-in for any user: ``user = x_u V_r diag(s²/(s²+λ))``. ``P_jj`` is taken from the same
``r`` directions plus ``1/λ`` for the rest, which is exact when the dropped ``s²`` are small next to
``λ``. Before the SVD, item columns are scaled by ``n_users(j)^-popularity_exponent`` (a long-tail
correction measured to help on Last.fm) and user rows by ``‖x_u‖^-user_norm_exponent`` (so heavy
users do not dominate the singular directions).

Cold start: the last vector coordinate is an item bias (users have 1 there; items with plays have 0).
Items without interactions get their whole vector from their features through a linear map ``W``
fitted on the items with interactions so that ``user_vectors @ (F W)ᵀ`` reproduces the (scaled)
interaction matrix (LinMap, Sedhain et al. 2017): one ridge regression per dimension, all solved at once.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from models.base import StoredVectors, checked_params
from models.features import ItemFeatures
from models.foldin import FoldIn
from models.interactions import Interactions

# regularization and the two exponents: the best of a random search on a Last.fm validation split
# (bench/tune_lastfm.py); 64 dimensions score a 50,000-track catalog in about 0.7 ms (one BLAS thread)
DEFAULTS = {
    "dimensions": 64,  # vector dimension: dimensions - 1 singular directions + the item-bias coordinate
    "regularization": 3.7,  # λ relative to the smallest kept squared singular value
    "popularity_exponent": 0.27,
    "user_norm_exponent": 0.65,
    "feature_regularization": 1000.0,  # ridge penalty of the feature -> vector map (cold items)
    "random_state": 42,
    "svd_method": "auto",  # "dense_gram", "randomized", or "auto"; a fitted model records the one it used
}
SVD_METHODS = ("auto", "dense_gram", "randomized")
# "auto": the exact SVD from the dense Gram matrix of the smaller side (its memory grows with the
# square of that side) when it has at most this many rows, else the randomized SVD (memory and time
# linear in users + items + interactions)
_DENSE_GRAM_LIMIT = 8000
# randomized SVD (Halko, Martinsson & Tropp 2011, Algorithm 4.4): extra directions and subspace
# iterations; on Last.fm (1,892 x 17,632) they rank as well as the exact SVD (NDCG@10 0.2484 both, precision@10
# 0.2016 vs 0.2014: the randomized row of bench/quality_lastfm.py)
_OVERSAMPLING = 32
_POWER_ITERATIONS = 12
# a refit warm-started from the evaluation fit (:meth:`LowRankEASE.warm_start`) starts its subspace
# iteration from that fit's basis, which already spans nearly the same top directions (the two matrices
# differ by the held-out rows only), so it needs fewer iterations
_WARM_POWER_ITERATIONS = 4


class LowRankEASE(StoredVectors):
    name = "lowrank_ease"

    def __init__(self, **params) -> None:
        super().__init__(**checked_params(self.name, params, DEFAULTS))
        if int(self.params["dimensions"]) < 2:
            raise ValueError("lowrank_ease dimensions must be at least 2 (one direction plus the bias coordinate)")
        if self.params["svd_method"] not in SVD_METHODS:
            raise ValueError(
                f"lowrank_ease svd_method must be one of {', '.join(SVD_METHODS)} (got {self.params['svd_method']!r})"
            )
        self._warm: LowRankEASE | None = None
        self._subspace: np.ndarray | None = None  # the randomized SVD's basis (in memory only)
        self.refit = "full"  # how this fit was made: "full", or warm-started from an earlier fit

    def warm_start(self, previous: LowRankEASE) -> None:
        """Make the next :meth:`fit` reuse the item-side work of ``previous`` (a fit on a subset of the
        same users x items, e.g. the evaluation fit on the training split): the randomized SVD's
        subspace iteration starts from its basis (``_WARM_POWER_ITERATIONS`` instead of
        ``_POWER_ITERATIONS``) and the feature map's conjugate gradients from its map. The exact SVD
        (``dense_gram``) is recomputed as before; the feature map still converges to its tolerance."""
        self._warm = previous

    # --- fitting -------------------------------------------------------------------------
    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        p = self.params
        x = interactions.matrix.astype(np.float64).tocsr()
        users_per_item = np.asarray((x > 0).sum(axis=0)).ravel()
        self._column_scale = np.maximum(users_per_item, 1).astype(np.float64) ** -float(p["popularity_exponent"])
        scaled = (x @ sp.diags(self._column_scale)).tocsr()
        row_norms = np.sqrt(np.asarray(scaled.multiply(scaled).sum(axis=1)).ravel())
        balanced = (sp.diags(np.maximum(row_norms, 1e-12) ** -float(p["user_norm_exponent"])) @ scaled).tocsr()

        method = p["svd_method"] if p["svd_method"] != "auto" else svd_method_for(balanced.shape)
        self.params["svd_method"] = method  # logged with the other parameters: which SVD this model had
        warm = self._warm if self._warm is not None and self._warm._item_vecs.shape[0] == x.shape[1] else None
        self._warm = None
        start = getattr(warm, "_subspace", None) if warm is not None and method == "randomized" else None
        if start is not None and start.shape[0] != min(x.shape):
            start = None
        s, v, self._subspace = _top_singular(
            balanced, int(p["dimensions"]) - 1, int(p["random_state"]), method, start=start
        )
        parts = (["svd_basis"] if start is not None else []) + (
            ["feature_map"] if warm is not None and len(warm._feature_names) else []
        )
        self.refit = "warm_started:" + "+".join(parts) if parts else "full"
        lam = max(float(p["regularization"]) * s[-1] ** 2, 1e-9 * s[0] ** 2) if len(s) else 1.0
        diag_p = (v**2 / (s**2 + lam)).sum(axis=1) + np.clip(1.0 - (v**2).sum(axis=1), 0.0, None) / lam
        self._fold_in = (v * self._column_scale[:, None]) * (s**2 / (s**2 + lam))  # x_u @ this = user vector
        item_vecs = np.hstack([v * (1.0 / (diag_p * lam))[:, None], np.zeros((x.shape[1], 1))])
        self._user_vecs = self._with_bias(x @ self._fold_in)

        played = users_per_item > 0
        self._feature_names = np.array([], dtype=str)
        self._feature_map = np.zeros((0, item_vecs.shape[1]), dtype=np.float32)
        if item_features is not None and item_features.n_features:
            self._feature_names = np.asarray(item_features.names, dtype=str)
            self._feature_map = _fit_feature_map(
                _with_count_columns(item_features.matrix)[played],
                scaled[:, played],
                self._user_vecs,
                float(p["feature_regularization"]),
                initial=warm._feature_map.astype(np.float64)
                if warm is not None and np.array_equal(warm._feature_names, self._feature_names)
                else None,
            ).astype(np.float32)
            cold = np.flatnonzero(~played)
            item_vecs[cold] = _with_count_columns(item_features.matrix[cold]) @ self._feature_map
        self._item_vecs = item_vecs.astype(np.float32)

    @staticmethod
    def _with_bias(user_part: np.ndarray) -> np.ndarray:
        return np.hstack([user_part, np.ones((user_part.shape[0], 1))]).astype(np.float32)

    # --- vectors -------------------------------------------------------------------------
    def fold_in(self) -> FoldIn:
        """Exact: the map training users get, with the bias coordinate in the tail."""
        self._check_fitted()
        d = self._fold_in.shape[1]
        matrix = np.hstack([self._fold_in, np.zeros((self._fold_in.shape[0], 1))]).astype(np.float32)
        return FoldIn(matrix, np.r_[np.zeros(d), 1.0].astype(np.float32))

    def fold_in_users(self, matrix: sp.csr_matrix) -> np.ndarray:
        """Vectors of users given as rows of weights over the model's items (e.g. new or updated
        users); exactly what a training user with that row gets."""
        self._check_fitted()
        return self._with_bias(sp.csr_matrix(matrix, dtype=np.float64) @ self._fold_in)

    def cold_item_vectors(self, features: ItemFeatures) -> np.ndarray:
        """Vectors for items unseen in training, from their features alone (features the model was
        not fitted with are ignored)."""
        self._check_fitted()
        if not len(self._feature_names):
            raise ValueError("this lowrank_ease model was fitted without item features: it cannot place new items")
        column = {n: i for i, n in enumerate(self._feature_names)}
        idx = np.array([column.get(n, -1) for n in np.asarray(features.names, dtype=str)], dtype=np.int64)
        known = np.flatnonzero(idx >= 0)
        to_model_columns = sp.csr_matrix(
            (np.ones(len(known)), (known, idx[known])), shape=(len(idx), len(self._feature_names))
        )
        aligned = features.matrix.astype(np.float64) @ to_model_columns
        return (_with_count_columns(aligned) @ self._feature_map).astype(np.float32)

    def similarity_vectors(self) -> np.ndarray:
        v = self._item_vecs[:, :-1]  # without the bias coordinate
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    # --- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_vecs": self._user_vecs,
            "item_vecs": self._item_vecs,
            "fold_in": self._fold_in.astype(np.float32),
            "feature_names": self._feature_names.astype(str),
            "feature_map": self._feature_map,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_vecs = arrays["user_vecs"]
        self._item_vecs = arrays["item_vecs"]
        self._fold_in = arrays["fold_in"]
        self._feature_names = arrays["feature_names"]
        self._feature_map = arrays["feature_map"]


def svd_method_for(shape: tuple[int, int]) -> str:
    """The SVD ``svd_method="auto"`` picks for a users x items matrix of this shape."""
    return "dense_gram" if min(shape) <= _DENSE_GRAM_LIMIT else "randomized"


def _top_singular(
    x: sp.csr_matrix, rank: int, seed: int, method: str, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The ``rank`` largest singular values of ``x`` (descending, zeros dropped), their right
    singular vectors (n_items, rank), and the randomized SVD's basis (None for the exact one).
    ``method``: "dense_gram" (exact) or "randomized" (from ``start``, a basis over the smaller side,
    when given)."""
    n_users, n_items = x.shape
    rank = min(rank, n_users, n_items)
    small_side_users = n_users <= n_items
    a = x if small_side_users else x.T.tocsr()  # rows: the smaller side
    if method == "dense_gram":
        gram = (a @ a.T).toarray()
        n = gram.shape[0]
        w, left = scipy.linalg.eigh(gram, subset_by_index=[n - rank, n - 1])
        w, left = w[::-1], left[:, ::-1]
        basis = None
    else:
        w, left, basis = _randomized_eigh_of_gram(a, rank, seed, start)
    keep = w > 1e-10 * max(w[0], 1e-300) if len(w) else np.zeros(0, dtype=bool)
    s, left = np.sqrt(w[keep]), left[:, keep]
    v = (a.T @ left) / s if small_side_users else left
    return s, np.asarray(v), basis


def _randomized_eigh_of_gram(
    a: sp.csr_matrix, rank: int, seed: int, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``rank`` eigenvalues (descending) and eigenvectors of ``a aᵀ`` by subspace iteration from
    ``start`` (a basis, e.g. an earlier fit's: fewer iterations) or else a seeded Gaussian: only products
    with ``a`` and ``aᵀ``, memory (rows + columns) x (rank + oversampling). Also returns the final basis. Halko, Martinsson & Tropp (2011), Algorithms 4.4 and 5.1."""
    width = min(rank + _OVERSAMPLING, a.shape[0])
    at = a.T.tocsr()
    if start is not None and start.shape == (a.shape[0], width):
        q, iterations = start, _WARM_POWER_ITERATIONS
    else:
        q = np.linalg.qr(np.random.default_rng(seed).standard_normal((a.shape[0], width)))[0]
        iterations = _POWER_ITERATIONS
    for _ in range(iterations):
        q = np.linalg.qr(a @ (at @ q))[0]
    projected = at @ q  # (aᵀ q): a ≈ q (aᵀ q)ᵀ
    w, small = np.linalg.eigh(projected.T @ projected)
    top = np.argsort(-w)[:rank]
    return np.maximum(w[top], 0.0), q @ small[:, top], q


def _with_count_columns(features: sp.spmatrix) -> sp.csr_matrix:
    """Features plus log1p(number of active features) and a constant: how much is known about an item
    is itself a signal (on Last.fm, tag-rich artists are the popular ones)."""
    features = sp.csr_matrix(features, dtype=np.float64)
    extra = np.column_stack([np.log1p(np.diff(features.indptr)), np.ones(features.shape[0])])
    return sp.hstack([features, sp.csr_matrix(extra)], format="csr")


def _fit_feature_map(
    features: sp.csr_matrix,
    targets: sp.csr_matrix,
    user_vecs: np.ndarray,
    penalty: float,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """W minimising ‖targets − U (F W)ᵀ‖² + penalty‖W‖², U = user_vecs, F = features (rows = items).

    Rotating U to orthogonal columns (U E, with UᵀU = E Λ Eᵀ) splits the problem into one ridge
    regression per column k: F w_k ≈ targetsᵀ U e_k / λ_k with penalty / λ_k. With few features the
    regressions share one eigendecomposition of FᵀF; with many, they are solved iteratively together
    (:func:`_ridge_columns`), from ``initial`` (an earlier W, e.g. the evaluation fit's) when given.
    """
    u = user_vecs.astype(np.float64)
    lam, e = np.linalg.eigh(u.T @ u)
    lam = np.maximum(lam, 1e-12 * max(lam.max(), 1e-300))
    projected = np.asarray(targets.T @ (u @ e)) / lam  # (n_items, d): the per-column regression targets
    if features.shape[1] <= _DENSE_GRAM_LIMIT:
        eig_f, basis = np.linalg.eigh((features.T @ features).toarray())
        rhs = basis.T @ np.asarray(features.T @ projected)
        w = basis @ (rhs / (eig_f[:, None] + penalty / lam[None, :]))
    else:
        w = _ridge_columns(features, projected, penalty / lam, initial=None if initial is None else initial @ e)
    return w @ e.T


def _ridge_columns(
    a: sp.csr_matrix, b: np.ndarray, damping: np.ndarray, tol: float = 1e-6, initial: np.ndarray | None = None
) -> np.ndarray:
    """Every column k of ``W`` minimising ‖a w_k − b_k‖² + damping_k ‖w_k‖², in one solve: conjugate
    gradients on the normal equations ``(aᵀa + damping_k I) w_k = aᵀ b_k``, all columns together, over
    the sparse Gram matrix ``aᵀa`` (formed once) and preconditioned by its diagonal (feature counts
    differ by orders of magnitude). One LSQR per column read ``a`` twice per column and iteration: at
    100,000 tracks x 9,156 features, 64 LSQRs took 31 s of a 34 s fit. A column stops once its
    normal-equation residual is ``tol`` of its right-hand side's."""
    gram = (a.T @ a).tocsr()
    rhs = np.asarray(a.T @ b)
    inverse_diagonal = 1.0 / (gram.diagonal()[:, None] + damping[None, :])
    if initial is not None and initial.shape == rhs.shape:
        w = initial.copy()
        r = rhs - (np.asarray(gram @ w) + w * damping[None, :])
    else:
        w = np.zeros_like(rhs)
        r = rhs.copy()
    z = r * inverse_diagonal
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    stop = tol * np.linalg.norm(rhs, axis=0)
    for _ in range(max(10 * a.shape[1], 1000)):
        active = np.linalg.norm(r, axis=0) > stop
        if not active.any():
            break
        q = np.asarray(gram @ p) + p * damping[None, :]
        curvature = np.einsum("ij,ij->j", p, q)
        alpha = np.where(active, rz / np.where(curvature > 0, curvature, 1.0), 0.0)
        w += p * alpha[None, :]
        r -= q * alpha[None, :]
        z = r * inverse_diagonal
        rz_next = np.einsum("ij,ij->j", r, z)
        beta = np.where(active, rz_next / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + p * beta[None, :]
        rz = rz_next
    return w
