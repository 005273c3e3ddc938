import numpy as np
import pandas as pd
import pytest

from models.features import ItemFeatures
from models.interactions import Interactions


def block_matrix(n_users_per_group: int = 20, n_items_per_block: int = 30, per_user: int = 12, seed: int = 0):
    """Two taste groups: group g's users only play items of block g. The known answer: a
    personalised model recommends a user's own block."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(2):
        for u in range(n_users_per_group):
            items = rng.choice(n_items_per_block, size=per_user, replace=False) + g * n_items_per_block
            for i in items:
                rows.append((f"g{g}u{u:02d}", f"item{i:03d}", float(rng.integers(1, 4))))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight"])
    return Interactions.from_frame(frame)


@pytest.fixture(scope="session")
def blocks() -> Interactions:
    return block_matrix()


@pytest.fixture(scope="session")
def block_features(blocks) -> ItemFeatures:
    """One feature per block: the content signal a hybrid model can use for cold items."""
    block = [f"block:{int(i[4:]) // 30}" for i in blocks.item_ids]
    return ItemFeatures.from_pairs(blocks.item_ids, pd.DataFrame({"item_id": blocks.item_ids, "feature": block}))
