"""LightFM hybrid matrix factorisation: item ids plus item features (genres, audio, tags).

Item representation = the weighted sum of the embeddings of its id and its features, so a track nobody
has played yet still gets a vector from its features (cold start). Training positives carry the graded
weights from :mod:`models.weighting` as LightFM sample weights.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import StoredVectors
from models.features import ItemFeatures
from models.foldin import FoldIn, ridge_fold_in
from models.interactions import Interactions

DEFAULTS = {
    "no_components": 64,
    "loss": "warp",
    "epochs": 30,
    "learning_rate": 0.05,
    "item_alpha": 0.0,
    "user_alpha": 0.0,
    "max_sampled": 10,
    "use_item_ids": True,  # False: items are represented by their features only
    "feature_weight": 1.0,  # weight of the features relative to the id feature
    "num_threads": 2,
    "random_state": 42,
}


class LightFMHybrid(StoredVectors):
    name = "lightfm"

    def __init__(self, **params) -> None:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown lightfm parameters: {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        if params.get("loss", "warp") not in {"warp", "bpr", "logistic", "warp-kos"}:
            raise ValueError(f"loss must be warp, bpr, logistic or warp-kos, not {params['loss']!r}")
        super().__init__(**{**DEFAULTS, **params})

    def _item_feature_matrix(self, n_items: int, features: ItemFeatures | None) -> sp.csr_matrix | None:
        blocks = []
        if self.params["use_item_ids"] or features is None:
            blocks.append(sp.identity(n_items, dtype=np.float32, format="csr"))
        if features is not None:
            blocks.append(features.matrix.astype(np.float32) * float(self.params["feature_weight"]))
        matrix = sp.hstack(blocks, format="csr")
        sums = np.asarray(matrix.sum(axis=1)).ravel()
        # LightFM wants rows normalised; items with no active feature keep an all-zero row
        return (sp.diags(1.0 / np.where(sums > 0, sums, 1.0)).astype(np.float32) @ matrix).tocsr()

    def _fit(self, interactions: Interactions, item_features: ItemFeatures | None) -> None:
        try:
            from lightfm import LightFM  # imported lazily: a compiled extension that serving never needs
        except ImportError as exc:
            raise ImportError(
                "the lightfm algorithm needs LightFM, an optional part that builds with a C compiler: "
                "pip install -e '.[lightfm]' (make install adds it when `cc` exists)"
            ) from exc

        p = self.params
        coo = interactions.matrix.tocoo()
        positive = coo.data > 0
        rows, cols, weights = coo.row[positive], coo.col[positive], coo.data[positive]
        shape = interactions.matrix.shape
        binary = sp.coo_matrix((np.ones_like(weights), (rows, cols)), shape=shape)
        sample_weight = sp.coo_matrix((weights.astype(np.float32), (rows, cols)), shape=shape)
        item_matrix = self._item_feature_matrix(shape[1], item_features)
        model = LightFM(
            no_components=p["no_components"],
            loss=p["loss"],
            learning_rate=p["learning_rate"],
            item_alpha=p["item_alpha"],
            user_alpha=p["user_alpha"],
            max_sampled=p["max_sampled"],
            random_state=np.random.RandomState(p["random_state"]),
        )
        # logistic/warp-kos ignore or reject weights; the others scale each positive's gradient
        use_weights = p["loss"] in {"warp", "bpr"}
        model.fit(
            binary,
            item_features=item_matrix,
            sample_weight=sample_weight if use_weights else None,
            epochs=p["epochs"],
            num_threads=p["num_threads"],
        )
        item_bias, item_emb = model.get_item_representations(item_matrix)
        _, user_emb = model.get_user_representations()
        self._user_vecs = np.hstack([user_emb, np.ones((shape[0], 1))]).astype(np.float32)
        self._item_vecs = np.hstack([item_emb, item_bias[:, None]]).astype(np.float32)
        n_id = shape[1] if (p["use_item_ids"] or item_features is None) else 0
        self._feature_names = item_features.names if item_features is not None else np.array([], dtype=str)
        self._feature_emb = model.item_embeddings[n_id:].astype(np.float32)
        self._feature_bias = model.item_biases[n_id:].astype(np.float32)

    def fold_in(self) -> FoldIn:
        """Ridge projection onto the item embeddings; the bias coordinate is fixed at 1."""
        self._check_fitted()
        emb = ridge_fold_in(self._item_vecs[:, :-1])
        matrix = np.hstack([emb.matrix, np.zeros((emb.matrix.shape[0], 1), np.float32)])
        return FoldIn(matrix, np.r_[emb.tail, 1.0].astype(np.float32))

    def similarity_vectors(self) -> np.ndarray:
        v = self._item_vecs[:, :-1]  # the embedding without the bias column
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def cold_item_vectors(self, features: ItemFeatures) -> np.ndarray:
        """Vectors for items unseen in training, from their features alone."""
        self._check_fitted()
        column = {n: i for i, n in enumerate(self._feature_names)}
        idx = np.array([column.get(n, -1) for n in features.names], dtype=np.int64)
        known = idx >= 0
        m = features.matrix[:, np.flatnonzero(known)].astype(np.float32) * float(self.params["feature_weight"])
        sums = np.asarray(m.sum(axis=1)).ravel()
        m = sp.diags(1.0 / np.where(sums > 0, sums, 1.0)).astype(np.float32) @ m
        emb = m @ self._feature_emb[idx[known]]
        bias = m @ self._feature_bias[idx[known]]
        return np.hstack([emb, np.asarray(bias).reshape(-1, 1)]).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_vecs": self._user_vecs,
            "item_vecs": self._item_vecs,
            "feature_names": self._feature_names.astype(str),
            "feature_emb": self._feature_emb,
            "feature_bias": self._feature_bias,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_vecs = arrays["user_vecs"]
        self._item_vecs = arrays["item_vecs"]
        self._feature_names = arrays["feature_names"]
        self._feature_emb = arrays["feature_emb"]
        self._feature_bias = arrays["feature_bias"]
