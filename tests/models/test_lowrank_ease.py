"""Low-rank EASE: the spectral identity it rests on, fold-in, and cold items from features."""

import numpy as np
import pytest
import scipy.sparse as sp

from models import create
from models.features import ItemFeatures
from models.interactions import Interactions


def _random_interactions(n_users=30, n_items=12, seed=3):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.3) * rng.integers(1, 5, (n_users, n_items))
    dense[:, 0] = 0
    dense[np.arange(n_users), 1 + np.arange(n_users) % (n_items - 1)] = 2  # every item but 0 played
    matrix = sp.csr_matrix(dense.astype(np.float32))
    return Interactions(
        matrix, np.array([f"u{i}" for i in range(n_users)]), np.array([f"i{j}" for j in range(n_items)])
    )


def test_full_rank_scores_equal_ease_on_unplayed_items():
    """With every singular direction kept and no re-scaling, the dot product is exactly EASE's score
    (the Woodbury identity in the module docstring)."""
    data = _random_interactions()
    s = np.linalg.svd(data.matrix.toarray(), compute_uv=False)
    lam = 7.0
    rank = int((s > 1e-9).sum())
    low = create(
        "lowrank_ease",
        dimensions=rank + 1,
        regularization=lam / s[rank - 1] ** 2,
        popularity_exponent=0.0,
        user_norm_exponent=0.0,
    ).fit(data)
    ease = create("ease", regularization=lam, min_users=1).fit(data)
    unplayed = data.matrix.toarray() == 0
    users = np.arange(data.n_users)
    np.testing.assert_allclose(low.scores(users)[unplayed], ease.scores(users)[unplayed], rtol=1e-3, atol=1e-5)


def test_fold_in_gives_training_users_their_own_vectors(blocks):
    model = create("lowrank_ease", dimensions=8).fit(blocks)
    np.testing.assert_allclose(model.fold_in_users(blocks.matrix[:5]), model.user_vectors()[:5], rtol=1e-4, atol=1e-6)


def test_vector_dimension_is_the_parameter(blocks):
    model = create("lowrank_ease", dimensions=6).fit(blocks)
    assert model.user_vectors().shape[1] == model.item_vectors().shape[1] == 6


def test_cold_items_are_placed_from_their_features(blocks, block_features):
    m = blocks.matrix.tolil()
    m[:, [5, 40]] = 0  # item 5 (block 0) and item 40 (block 1) lose every interaction
    cold = blocks.with_matrix(sp.csr_matrix(m))
    model = create("lowrank_ease", dimensions=8, feature_regularization=1.0).fit(cold, block_features)
    group0 = np.array([u.startswith("g0") for u in blocks.user_ids])
    scores = model.scores(np.arange(blocks.n_users))
    assert scores[group0, 5].mean() > scores[~group0, 5].mean()
    assert scores[~group0, 40].mean() > scores[group0, 40].mean()
    # a brand-new item gets the same vector from cold_item_vectors as a zero-interaction column got
    new = ItemFeatures(block_features.item_ids[[5, 40]], block_features.matrix[[5, 40]], block_features.names)
    np.testing.assert_allclose(model.cold_item_vectors(new), model.item_vectors()[[5, 40]], rtol=1e-5, atol=1e-7)


def test_without_features_cold_items_score_zero_and_cannot_be_placed(blocks):
    m = blocks.matrix.tolil()
    m[:, 5] = 0
    model = create("lowrank_ease", dimensions=8).fit(blocks.with_matrix(sp.csr_matrix(m)))
    assert not model.item_vectors()[5].any()
    with pytest.raises(ValueError, match="without item features"):
        model.cold_item_vectors(ItemFeatures(np.array(["x"]), sp.csr_matrix((1, 1)), np.array(["f"])))


def test_dimensions_below_two_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        create("lowrank_ease", dimensions=1)


def test_large_matrices_use_the_sparse_svd(monkeypatch, blocks):
    """The iterative SVD path (catalogs too large for a dense Gram matrix) ranks like the exact one."""
    import models.lowrank_ease as module

    exact = create("lowrank_ease", dimensions=6).fit(blocks)
    monkeypatch.setattr(module, "_DENSE_GRAM_LIMIT", 5)
    sparse = create("lowrank_ease", dimensions=6).fit(blocks)
    assert (exact.params["svd_method"], sparse.params["svd_method"]) == ("dense_gram", "randomized")
    users = np.arange(blocks.n_users)
    top_exact, _ = exact.recommend(users, k=5, exclude=blocks.matrix)
    top_sparse, _ = sparse.recommend(users, k=5, exclude=blocks.matrix)
    assert (np.sort(top_exact, axis=1) == np.sort(top_sparse, axis=1)).mean() > 0.9


def _low_rank_plus_noise(n_users=400, n_items=700, rank=12, seed=5) -> sp.csr_matrix:
    """A sparse non-negative matrix with a decaying spectrum, like weighted listens."""
    rng = np.random.default_rng(seed)
    signal = rng.gamma(1.0, 1.0, (n_users, rank)) @ (
        rng.gamma(1.0, 1.0, (rank, n_items)) * (0.7 ** np.arange(rank))[:, None]
    )
    kept = rng.random((n_users, n_items)) < 0.05
    return sp.csr_matrix(np.where(kept, signal, 0.0))


@pytest.mark.parametrize("shape", [(400, 700), (700, 400)])  # users or items the smaller side
def test_randomized_svd_matches_the_dense_gram(shape):
    from models.lowrank_ease import _top_singular

    x = _low_rank_plus_noise(*shape)
    s_exact, v_exact, _ = _top_singular(x, 8, 0, "dense_gram")
    s_fast, v_fast, _ = _top_singular(x, 8, 0, "randomized")
    np.testing.assert_allclose(s_fast, s_exact, rtol=1e-6)
    # the same right singular subspace: every principal angle's cosine is ~1
    cosines = np.linalg.svd(v_exact.T @ v_fast, compute_uv=False)
    assert cosines.min() > 0.999


def test_randomized_and_dense_models_rank_alike():
    rng = np.random.default_rng(1)
    x = _low_rank_plus_noise()
    data = Interactions(
        x.astype(np.float32),
        np.array([f"u{i}" for i in range(x.shape[0])]),
        np.array([f"i{j}" for j in range(x.shape[1])]),
    )
    dense = create("lowrank_ease", dimensions=9, svd_method="dense_gram").fit(data)
    fast = create("lowrank_ease", dimensions=9, svd_method="randomized").fit(data)
    users = rng.choice(data.n_users, 100, replace=False)
    top_dense, _ = dense.recommend(users, k=10, exclude=data.matrix[users])
    top_fast, _ = fast.recommend(users, k=10, exclude=data.matrix[users])
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_dense, top_fast)])
    assert overlap > 0.98
    assert (dense.params["svd_method"], fast.params["svd_method"]) == ("dense_gram", "randomized")


def test_auto_picks_the_randomized_svd_above_the_limit():
    from models.lowrank_ease import _DENSE_GRAM_LIMIT, svd_method_for

    assert svd_method_for((_DENSE_GRAM_LIMIT, 10**6)) == "dense_gram"
    assert svd_method_for((10**6, _DENSE_GRAM_LIMIT)) == "dense_gram"
    assert svd_method_for((_DENSE_GRAM_LIMIT + 1, 10**6)) == "randomized"
    assert svd_method_for((100_000, 1_000_000)) == "randomized"


def test_an_unknown_svd_method_is_refused_by_name():
    with pytest.raises(ValueError, match="svd_method must be one of auto, dense_gram, randomized"):
        create("lowrank_ease", svd_method="lanczos")


@pytest.mark.slow
def test_the_svd_method_used_is_an_mlflow_param(tmp_path, monkeypatch, blocks, mlflow_migrated):
    """A model trained with svd_method "auto" says in MLflow which SVD it had (here the randomized one:
    the limit is lowered so the small matrix counts as large)."""
    from mlflow import MlflowClient

    import models.lowrank_ease as module
    from core.model_registry import ModelRegistry
    from models.training import train

    uri = mlflow_migrated(f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry = ModelRegistry.open(uri, tmp_path / "artifacts", "test", "test-model")
    monkeypatch.setattr(module, "_DENSE_GRAM_LIMIT", 5)
    result = train(blocks.to_frame(), None, "lowrank_ease", {"dimensions": 4}, k=5)
    run_id = registry.log_version(
        result.model.save(tmp_path / "m"), result.algorithm, result.params, result.metrics, {}
    ).run_id
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.params["svd_method"] == "randomized"


def _lsqr_per_column(a, b, damping, tol=1e-6, initial=None):
    """The feature map's solver before issue 25: one LSQR per dimension from zero (the reference)."""
    from scipy.sparse.linalg import lsqr

    return np.column_stack(
        [lsqr(a, b[:, k], damp=np.sqrt(damping[k]), atol=1e-6, btol=1e-6)[0] for k in range(b.shape[1])]
    )


def test_the_feature_map_s_one_solve_equals_the_exact_ridge_solutions():
    from models.lowrank_ease import _ridge_columns, _with_count_columns

    rng = np.random.default_rng(0)
    a = _with_count_columns(sp.random(3000, 600, density=0.01, random_state=1, format="csr"))
    b = rng.normal(size=(3000, 12))
    damping = np.logspace(-3, 1, 12)
    gram = (a.T @ a).toarray()
    exact = np.column_stack(
        [np.linalg.solve(gram + damping[k] * np.eye(gram.shape[0]), a.T @ b[:, k]) for k in range(12)]
    )
    together = _ridge_columns(a, b, damping)
    assert np.abs(together - exact).max() <= 1e-4 * np.abs(exact).max()


def test_the_model_s_vectors_are_those_of_one_lsqr_per_dimension(monkeypatch):
    """Issue 25: the feature map of many features (past the dense Gram limit) was one LSQR per dimension,
    31 of a 34 s fit at 100,000 tracks; solved together, the model's vectors stay the same."""
    from core.synthetic import SyntheticWorld
    from models import lowrank_ease
    from models.training import build_inputs

    world = SyntheticWorld.generate(3000, 400, seed=1)
    events = world.events(20_000, days=10)
    weights = events.groupby(["user_id", "track_id"]).size().rename("weight").reset_index()
    matrix, features = build_inputs(
        weights.rename(columns={"track_id": "item_id"}).astype({"weight": float}), world.tracks
    )
    monkeypatch.setattr(lowrank_ease, "_DENSE_GRAM_LIMIT", 0)  # the iterative branch, as at 1M tracks
    now = create("lowrank_ease").fit(matrix, features)
    monkeypatch.setattr(lowrank_ease, "_ridge_columns", _lsqr_per_column)
    before = create("lowrank_ease").fit(matrix, features)
    cold = np.asarray(matrix.matrix.sum(axis=0)).ravel() == 0
    assert cold.sum() > 100  # the feature map places these
    scale = np.abs(before.item_vectors()).max()
    np.testing.assert_allclose(now.item_vectors(), before.item_vectors(), rtol=0, atol=1e-3 * scale)
    np.testing.assert_array_equal(now.user_vectors(), before.user_vectors())


def _holdout_and_all(n_users=600, n_items=2000, seed=0):
    from models.evaluation.splits import random_holdout

    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n_users, 15000), rng.zipf(1.3, 15000) % n_items
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # duplicates summed: back to plays
    data = Interactions(
        matrix, np.array([f"u{i}" for i in range(n_users)]), np.array([f"i{j}" for j in range(n_items)])
    )
    return random_holdout(data, test_share=0.2, min_items=5, seed=42).train, data


def test_refit_warm_started_from_the_evaluation_fit_gives_the_full_refit():
    """The refit on all data, started from the evaluation fit's randomized-SVD basis (4 subspace
    iterations instead of 12), scores like a refit from scratch: scores within 2% of the largest score,
    top-10 lists 99% the same; and the model says how it was made (logged as the MLflow param refit)."""
    train, everything = _holdout_and_all()
    evaluation = create("lowrank_ease", dimensions=16, svd_method="randomized").fit(train)
    full = create("lowrank_ease", dimensions=16, svd_method="randomized").fit(everything)
    warm = create("lowrank_ease", dimensions=16, svd_method="randomized")
    warm.warm_start(evaluation)
    warm.fit(everything)
    assert full.refit == "full" and warm.refit == "warm_started:svd_basis"
    a, b = full._user_vecs @ full._item_vecs.T, warm._user_vecs @ warm._item_vecs.T
    assert np.abs(a - b).max() <= 0.02 * np.abs(a).max()
    top_a, top_b = np.argsort(-a, axis=1)[:, :10], np.argsort(-b, axis=1)[:, :10]
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)])
    assert overlap >= 0.99
    # a warm start from a model of another shape is ignored: a full fit
    other = create("lowrank_ease", dimensions=16, svd_method="randomized")
    other.warm_start(create("lowrank_ease", dimensions=4).fit(_random_interactions()))
    assert other.fit(everything).refit == "full"


def test_feature_map_solve_from_an_earlier_map_converges_to_the_same_map():
    """The feature map's conjugate gradients started from an earlier solution (the evaluation fit's map)
    reach the map solved from zero, to the solver's tolerance."""
    from models.lowrank_ease import _ridge_columns

    rng = np.random.default_rng(1)
    a = sp.random(400, 60, density=0.05, random_state=2, format="csr") + sp.eye(400, 60, format="csr")
    b = rng.standard_normal((400, 5))
    damping = np.array([0.1, 1.0, 3.0, 10.0, 30.0])
    cold = _ridge_columns(a, b, damping, tol=1e-10)
    nearby = _ridge_columns(a, b + 0.1 * rng.standard_normal(b.shape), damping, tol=1e-10)
    warm = _ridge_columns(a, b, damping, tol=1e-10, initial=nearby)
    np.testing.assert_allclose(warm, cold, rtol=1e-6, atol=1e-8)
    exact = np.column_stack(
        [np.linalg.solve((a.T @ a).toarray() + d * np.eye(60), a.T @ b[:, k]) for k, d in enumerate(damping)]
    )
    np.testing.assert_allclose(warm, exact, rtol=1e-6, atol=1e-8)
