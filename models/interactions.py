"""The user x item matrix every algorithm trains on, with the id <-> index maps beside it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class Interactions:
    """Sparse users x items matrix of positive training weights.

    ``user_ids[i]`` / ``item_ids[j]`` are the string ids of row i / column j.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    _user_index: dict[str, int] | None = field(default=None, repr=False)
    _item_index: dict[str, int] | None = field(default=None, repr=False)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        weight_col: str | None = "weight",
        item_ids: np.ndarray | None = None,
    ) -> Interactions:
        """Build from a long table of (user, item, weight[, time]). Duplicate pairs are summed.

        ``item_ids`` fixes the item universe (e.g. the whole catalog, so tracks nobody played still get
        a column); rows whose item is not in it are dropped.
        """
        if item_ids is not None:
            item_ids = np.asarray(item_ids, dtype=str)
            item_idx = pd.Index(item_ids).get_indexer(frame[item_col].astype(str))
            frame = frame.loc[item_idx >= 0]
            item_idx = item_idx[item_idx >= 0]
        else:
            item_ids, item_idx = np.unique(frame[item_col].astype(str).to_numpy(), return_inverse=True)
        user_ids, user_idx = np.unique(frame[user_col].astype(str).to_numpy(), return_inverse=True)
        weights = frame[weight_col].to_numpy(dtype=np.float32) if weight_col else np.ones(len(frame), dtype=np.float32)
        shape = (len(user_ids), len(item_ids))
        matrix = sp.csr_matrix((weights, (user_idx, item_idx)), shape=shape, dtype=np.float32)
        matrix.sum_duplicates()
        return cls(matrix=matrix, user_ids=np.asarray(user_ids, dtype=str), item_ids=np.asarray(item_ids, dtype=str))

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    @property
    def user_index(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = {t: i for i, t in enumerate(self.item_ids)}
        return self._item_index

    def with_matrix(self, matrix: sp.csr_matrix) -> Interactions:
        """Same ids, another matrix (a split's train or test part)."""
        return Interactions(matrix=matrix.tocsr(), user_ids=self.user_ids, item_ids=self.item_ids)

    def to_frame(self) -> pd.DataFrame:
        coo = self.matrix.tocoo()
        return pd.DataFrame({"user_id": self.user_ids[coo.row], "item_id": self.item_ids[coo.col], "weight": coo.data})
