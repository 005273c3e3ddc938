import numpy as np
import pandas as pd

from models.evaluation import cold_start_split, random_holdout, time_split
from models.evaluation.splits import last_seen_matrix
from models.interactions import Interactions


def test_random_holdout_holds_out_a_share_per_user_without_leakage(blocks):
    split = random_holdout(blocks, test_share=0.25, min_items=5, seed=1)
    assert (split.train.matrix.multiply(split.test.matrix)).nnz == 0
    assert split.train.nnz + split.test.nnz == blocks.nnz
    per_user = np.diff(split.test.matrix.indptr)
    assert (per_user == 3).all()  # 25% of 12
    again = random_holdout(blocks, test_share=0.25, min_items=5, seed=1)
    assert (again.test.matrix != split.test.matrix).nnz == 0


def test_users_below_min_items_stay_in_training(blocks):
    split = random_holdout(blocks, test_share=0.2, min_items=13, seed=1)
    assert split.test.nnz == 0


def test_cold_start_split_removes_items_entirely(blocks):
    split = cold_start_split(blocks, item_share=0.2, seed=3)
    cold = split.candidate_items
    assert len(cold) == 12
    assert split.train.matrix[:, cold].nnz == 0
    assert split.test.matrix[:, np.setdiff1d(np.arange(blocks.n_items), cold)].nnz == 0


def test_time_split_puts_recent_pairs_in_test():
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["x", "y", "x", "z"],
            "weight": 1.0,
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-09", "2024-01-02", "2024-01-10"], utc=True),
        }
    )
    inter = Interactions.from_frame(frame)
    seen = last_seen_matrix(frame, inter)
    split = time_split(inter, seen, cutoff=pd.Timestamp("2024-01-08", tz="UTC").timestamp())
    test = split.test.to_frame()
    assert set(zip(test.user_id, test.item_id)) == {("a", "y"), ("b", "z")}
