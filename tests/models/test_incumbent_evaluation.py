"""An already-trained model scored on another model's split through its fold-in: the champion's side of
a like-for-like promotion gate (models/evaluation/incumbent.py)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models import create
from models.evaluation import (
    FoldedIn,
    evaluate,
    evaluate_incumbent,
    head_to_head,
    random_holdout,
    unseen_pairs,
)
from models.evaluation.splits import Split
from models.interactions import Interactions
from models.ranking import top_k

RANKING = [
    "precision_at_5",
    "recall_at_5",
    "ndcg_at_5",
    "map_at_5",
    "hit_rate_at_5",
    "auc",
    "novelty",
    "diversity",
    "users",
]


@pytest.fixture(scope="module")
def split(blocks):
    return random_holdout(blocks, test_share=0.25, min_items=5, seed=1)


@pytest.fixture(scope="module")
def incumbent(split):
    """Low-rank EASE fitted on the split's training part: its training users get exactly its fold-in."""
    return create("lowrank_ease", dimensions=6).fit(split.train)


def other_id_space(split: Split, new_item: str = "item_new") -> Split:
    """The same split in another model's id space: items in reverse order, plus ``new_item`` that every
    user played (in training) and that the incumbent never saw."""

    def moved(part: Interactions) -> Interactions:
        frame = part.to_frame()
        if part is split.train:
            frame = pd.concat([frame, pd.DataFrame({"user_id": part.user_ids, "item_id": new_item, "weight": 3.0})])
        return Interactions.from_frame(frame, item_ids=np.r_[split.train.item_ids[::-1], [new_item]])

    return Split(train=moved(split.train), test=moved(split.test))


def test_a_model_scored_through_its_fold_in_on_its_own_split_equals_its_evaluation(split, incumbent):
    """The known answer: for low-rank EASE the fold-in is the map its training users got, so scoring it
    as an incumbent on the split it was fitted on gives exactly its own evaluation."""
    own = evaluate(incumbent, split, k=5)
    folded = evaluate_incumbent(incumbent, split, k=5)
    popularity = evaluate(create("popularity").fit(split.train), split, k=5)
    assert (
        own["ndcg_at_5"] > 1.5 * popularity["ndcg_at_5"]
    )  # a model that ranks each user's own block, not an empty list
    assert folded == pytest.approx(own, rel=1e-5)
    users = np.arange(split.train.n_users)
    np.testing.assert_allclose(
        FoldedIn(incumbent, split.train).scores(users), incumbent.scores(users), rtol=1e-4, atol=1e-5
    )


def test_another_id_space_is_mapped_and_items_the_incumbent_lacks_are_never_recommended(split, incumbent):
    moved = other_id_space(split)
    folded = FoldedIn(incumbent, moved.train)
    users = np.arange(moved.train.n_users)
    scores = folded.scores(users)
    new = moved.train.n_items - 1
    assert np.isneginf(scores[:, new]).all()
    # the known items score as in the incumbent's own space (reversed order), the new item's weight moved nothing
    np.testing.assert_allclose(scores[:, :new][:, ::-1], incumbent.scores(users), rtol=1e-4, atol=1e-5)
    # so the same users get the same metrics; only coverage counts the one more catalog item
    own, there = evaluate(incumbent, split, k=5), evaluate_incumbent(incumbent, moved, k=5)
    assert {m: there[m] for m in RANKING} == pytest.approx({m: own[m] for m in RANKING}, rel=1e-5)
    assert there["coverage"] == pytest.approx(own["coverage"] * new / (new + 1))
    assert not folded.similarity_vectors()[new].any()


def test_the_new_item_is_not_recommended_even_when_nothing_else_is_left(incumbent):
    """A listener who played every item the incumbent holds gets an empty list from it, never the one
    item it lacks (padded with -1, as serving pads)."""
    items = np.r_[incumbent.item_ids, ["item_new"]]
    frame = pd.DataFrame({"user_id": "all", "item_id": incumbent.item_ids, "weight": 1.0})
    train = Interactions.from_frame(frame, item_ids=items)
    recommended, best = top_k(FoldedIn(incumbent, train).scores(np.array([0])), 5, exclude=train.matrix)
    assert (recommended == -1).all() and np.isneginf(best).all()


def test_a_model_without_a_fold_in_cannot_be_an_incumbent(split):
    ease = create("ease", min_users=1).fit(split.train)
    with pytest.raises(ValueError, match="no linear fold-in"):
        FoldedIn(ease, split.train)


def test_only_held_out_pairs_the_incumbent_never_trained_on_are_kept(blocks, split, incumbent):
    """Regression (issue 21): scored on every held-out pair of a new split, a champion refit on all the
    data of its day is measured on pairs it learned (0.6593 NDCG@10 against the retrained model's 0.3225
    in the taste-shift story); only the pairs it never trained on compare it with the new model."""
    assert (
        unseen_pairs(split, incumbent).test.nnz == split.test.nnz
    )  # fitted on the training part: every held-out pair is new to it
    refit = create("lowrank_ease", dimensions=6).fit(blocks)
    assert unseen_pairs(split, refit).test.nnz == 0 and head_to_head(incumbent, refit, split, k=5) is None
    # in another id space, with a held-out pair on an item it never held
    moved = other_id_space(split)
    test = moved.test.matrix.tolil()
    test[0, moved.test.n_items - 1] = 1.0
    moved.test = moved.test.with_matrix(test.tocsr())
    fresh = unseen_pairs(moved, refit)
    assert fresh.test.nnz == 1 and fresh.test.matrix[0, moved.test.n_items - 1] == 1.0 and fresh.train is moved.train
    refit._train = None  # as a model saved before its training matrix was kept
    with pytest.raises(ValueError, match="without its training matrix"):
        unseen_pairs(split, refit)


def test_head_to_head_measures_both_models_on_the_same_users_and_pairs(split):
    """An incumbent that also trained on the even users' held-out pairs is measured, with the new model,
    on the odd users' only."""
    even = sp.diags((np.arange(split.test.n_users) % 2 == 0).astype(np.float32)) @ split.test.matrix
    incumbent = create("lowrank_ease", dimensions=6).fit(split.train.with_matrix((split.train.matrix + even).tocsr()))
    challenger = create("popularity").fit(split.train)
    odd = unseen_pairs(split, incumbent)
    assert odd.test.nnz == split.test.nnz - even.nnz and set(odd.test_users % 2) == {1}
    versus = head_to_head(challenger, incumbent, split, k=5)
    assert versus.pairs == odd.test.nnz and versus.model["users"] == versus.incumbent["users"] == len(odd.test_users)
    assert versus.model == pytest.approx(evaluate(challenger, odd, k=5))
    assert versus.incumbent == pytest.approx(evaluate_incumbent(incumbent, odd, k=5))
