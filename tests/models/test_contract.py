"""One contract, run against every algorithm (the implicit/lightfm pattern)."""

import numpy as np
import pytest
import scipy.sparse as sp

from models import ALGORITHMS, create, load
from models.ranking import top_k
from tests.optional import needs_lightfm

# small, fast settings per algorithm for a 40 x 60 matrix
PARAMS = {
    "lightfm": {"no_components": 8, "epochs": 40, "num_threads": 1, "learning_rate": 0.05},
    "lowrank_ease": {"dimensions": 8},
    "ease": {"regularization": 10.0},
    "content": {"dimensions": 8},
    "genre_popularity": {"feature_prefix": "block:"},
}
PERSONALISED = {"lightfm", "lowrank_ease", "ease", "content", "genre_popularity"}


@pytest.fixture(
    params=[pytest.param(name, marks=needs_lightfm) if name == "lightfm" else name for name in sorted(ALGORITHMS)],
    scope="module",
)
def fitted(request, blocks, block_features):
    name = request.param
    return name, create(name, **PARAMS.get(name, {})).fit(blocks, block_features)


def test_vectors_have_one_row_per_user_and_item(fitted, blocks):
    _, model = fitted
    assert model.user_vectors().shape[0] == blocks.n_users
    assert model.item_vectors().shape[0] == blocks.n_items
    assert model.user_vectors().shape[1] == model.item_vectors().shape[1]
    assert model.user_vectors().dtype == np.float32


def test_scores_are_dot_products_of_vectors(fitted):
    _, model = fitted
    np.testing.assert_allclose(
        model.scores(np.array([3])), model.user_vectors()[[3]] @ model.item_vectors().T, rtol=1e-5
    )


def test_recommend_never_returns_excluded_or_disallowed_items(fitted, blocks):
    _, model = fitted
    users = np.arange(blocks.n_users)
    idx, _ = model.recommend(users, k=10, exclude=blocks.matrix)
    for u in users:
        assert not set(idx[u]) & set(blocks.matrix[u].indices)
    allowed = np.zeros(blocks.n_items, dtype=bool)
    allowed[:5] = True
    idx, scores = model.recommend(np.array([0]), k=10, allowed=allowed)
    assert set(idx[0][idx[0] >= 0]) <= set(range(5))
    assert (idx[0][5:] == -1).all() and np.isneginf(scores[0][5:]).all()  # padded, not invented


def test_personalised_models_recover_the_blocks(fitted, blocks):
    name, model = fitted
    if name not in PERSONALISED:
        pytest.skip(f"{name} is not personalised")
    idx, _ = model.recommend(np.arange(blocks.n_users), k=10, exclude=blocks.matrix)
    group = np.array([int(u[1]) for u in blocks.user_ids])
    block_of = np.array([int(i[4:]) // 30 for i in blocks.item_ids])
    own_block_share = (block_of[idx] == group[:, None]).mean()
    assert own_block_share > 0.9


def test_similar_items_excludes_the_item_itself(fitted):
    name, model = fitted
    idx, _ = model.similar_items(np.array([0, 31]), k=5)
    assert 0 not in idx[0] and 31 not in idx[1]
    if name in PERSONALISED:
        assert (idx[0] < 30).mean() >= 0.8 and (idx[1] >= 30).mean() >= 0.8


def test_save_and_load_round_trip(fitted, tmp_path):
    name, model = fitted
    model.save(tmp_path / name)
    again = load(tmp_path / name)
    assert again.name == name
    np.testing.assert_array_equal(again.item_ids, model.item_ids)
    np.testing.assert_allclose(again.scores(np.arange(5)), model.scores(np.arange(5)))
    assert (again.train_matrix != model.train_matrix).nnz == 0


def test_unknown_algorithm_and_parameters_are_rejected():
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        create("nope")
    with pytest.raises(ValueError, match="unknown lightfm parameters"):
        create("lightfm", components=3)


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        create("popularity").scores(np.array([0]))


@needs_lightfm
def test_lightfm_gives_cold_items_vectors_from_features(blocks, block_features):
    """A hybrid model places an item it never saw near the items that share its features."""
    m = blocks.matrix.tolil()
    m[:, 5] = 0  # item 5 (block 0) loses all its interactions
    cold = blocks.with_matrix(sp.csr_matrix(m))
    model = create("lightfm", **{**PARAMS["lightfm"], "use_item_ids": False}).fit(cold, block_features)
    group0 = np.array([u.startswith("g0") for u in blocks.user_ids])
    scores = model.scores(np.arange(blocks.n_users))[:, 5]
    assert scores[group0].mean() > scores[~group0].mean()


def test_fold_in_maps_a_history_to_a_useful_vector(fitted, blocks):
    """Folding a training user's own row in gives a vector that ranks like the trained one (exactly,
    for low-rank EASE): what the feedback worker relies on."""
    name, model = fitted
    if name == "ease":
        with pytest.raises(NotImplementedError):
            model.fold_in()
        return
    fold = model.fold_in()
    assert fold.matrix.shape == (blocks.n_items, model.item_vectors().shape[1])
    rows = [blocks.matrix[u] for u in range(blocks.n_users)]
    folded = np.vstack([fold.vector(r.indices, r.data) for r in rows])
    if name == "lowrank_ease":
        np.testing.assert_allclose(folded, model.user_vectors(), rtol=1e-4, atol=1e-5)
    if name in PERSONALISED:
        scores = folded @ model.item_vectors().T
        idx, _ = top_k(scores, 10, exclude=blocks.matrix)
        group = np.array([int(u[1]) for u in blocks.user_ids])
        block_of = np.array([int(i[4:]) // 30 for i in blocks.item_ids])
        assert (block_of[idx] == group[:, None]).mean() > 0.8
    # the incremental form adds up to the batch form
    r = rows[0]
    step = fold.update(fold.vector(r.indices[:3], r.data[:3]), r.indices[3:], r.data[3:])
    np.testing.assert_allclose(step, fold.vector(r.indices, r.data), rtol=1e-4, atol=1e-5)


def test_a_shared_ranking_is_cut_from_its_head_with_the_same_lists(blocks):
    """top_k_shared (the demo simulation's popularity arm): the lists of one shared score vector with
    each user's played tracks excluded, ranking only the k + (most played) best columns, are those of
    top_k over the whole catalog (distinct scores, so no ties to order)."""
    from models.ranking import top_k_shared

    scores = np.random.default_rng(4).permutation(blocks.n_items).astype(np.float32)
    for k in (1, 10, blocks.n_items):
        idx, best = top_k_shared(scores, k, exclude=blocks.matrix)
        want_idx, want_best = top_k(np.tile(scores, (blocks.n_users, 1)), k, exclude=blocks.matrix)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(best, want_best)
