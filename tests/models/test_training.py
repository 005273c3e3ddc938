"""The training procedure behind the asset and the CLI: held-out metrics, then a refit on everything."""

import pytest

from models.training import train
from tests.optional import needs_lightfm


@needs_lightfm
def test_training_reports_held_out_metrics_for_model_and_baseline(blocks):
    frame = blocks.to_frame()
    result = train(frame, None, "lightfm", {"no_components": 8, "epochs": 30, "num_threads": 1}, k=5)
    assert result.metrics["test_precision_at_5"] > result.baseline_metrics["test_precision_at_5"]
    assert result.data["test_interactions"] > 0 and len(result.fingerprint) == 16
    assert result.model.train_matrix.nnz == blocks.nnz  # refit on everything after evaluation


def test_evaluation_of_a_sample_of_users_is_seeded_and_batched_by_cells(blocks, monkeypatch):
    """Large catalogs are evaluated on a seeded sample of test users, in batches bounded by cells; a
    sample of every user and one-user batches give exactly the full evaluation."""
    import models.evaluation.protocol as protocol
    from models import create
    from models.evaluation import evaluate, random_holdout

    split = random_holdout(blocks, test_share=0.25, min_items=5, seed=1)
    model = create("lowrank_ease", dimensions=6).fit(split.train)
    full = evaluate(model, split, k=5)
    assert evaluate(model, split, k=5, max_users=10**6) == pytest.approx(full, nan_ok=True)
    monkeypatch.setattr(protocol, "_BATCH_CELLS", 1)  # one user per batch
    assert evaluate(model, split, k=5) == pytest.approx(full, nan_ok=True)
    sample = evaluate(model, split, k=5, max_users=7, seed=3)
    assert sample["users"] == 7 < full["users"]
    assert sample == pytest.approx(evaluate(model, split, k=5, max_users=7, seed=3), nan_ok=True)


def test_a_new_model_and_the_incumbent_are_measured_on_the_pairs_the_incumbent_never_trained_on():
    """The known answer: the incumbent trained on one group of listeners, the new model on both; on the
    same data the incumbent saw every held-out pair (nothing to compare), on the data with the second
    group it is measured on that group's held-out pairs only, and so is the new model."""
    from tests.models.conftest import block_matrix

    frame = block_matrix().to_frame()
    old = frame[frame["user_id"].str.startswith("g0")]
    incumbent = train(old, None, "lowrank_ease", {"dimensions": 4}, k=5).model
    assert train(old, None, "lowrank_ease", {"dimensions": 4}, k=5, incumbent=incumbent).head_to_head is None
    result = train(frame, None, "lowrank_ease", {"dimensions": 4}, k=5, incumbent=incumbent)
    versus = result.head_to_head
    assert (
        versus.pairs == 20 * 2 < result.data["test_interactions"]
    )  # 2 of the 12 items of each of the second group's 20 listeners
    assert versus.model["test_users"] == versus.incumbent["test_users"] == 20  # the second group's
    # the incumbent never saw the second group's block: through its fold-in it ranks it no better than popularity would
    assert versus.model["test_ndcg_at_5"] > versus.incumbent["test_ndcg_at_5"]
    assert versus.model["test_ndcg_at_5"] != pytest.approx(result.metrics["test_ndcg_at_5"])


def test_the_result_says_what_the_released_model_is(blocks):
    """refit (logged as the MLflow param ``refit``): the randomized low-rank EASE refit on everything
    starts from the evaluation fit's basis; refit=False releases the evaluation fit itself."""
    frame = blocks.to_frame()
    params = {"dimensions": 6, "svd_method": "randomized"}
    warm = train(frame, None, "lowrank_ease", params, k=5)
    assert warm.refit == "warm_started:svd_basis" and warm.model.train_matrix.nnz == blocks.nnz
    reused = train(frame, None, "lowrank_ease", params, k=5, refit=False)
    assert reused.refit == "reused_evaluation_fit" and reused.model.train_matrix.nnz < blocks.nnz
    assert train(frame, None, "popularity", {}, k=5).refit == "full"
