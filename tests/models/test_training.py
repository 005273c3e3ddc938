"""The training procedure behind the asset and the CLI: held-out metrics, then a refit on everything."""

import pytest

from models.training import train


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


def test_an_incumbent_is_measured_on_the_same_split():
    """The known answer: the model evaluated without its refit (fitted on the split's training part), given
    as the incumbent of the same training on the same data, scores exactly what the new model scores."""
    from tests.models.conftest import block_matrix

    frame = block_matrix().to_frame()
    first = train(frame, None, "lowrank_ease", {"dimensions": 4}, k=5, refit=False)
    assert first.incumbent_metrics is None
    second = train(frame, None, "lowrank_ease", {"dimensions": 4}, k=5, incumbent=first.model)
    assert second.incumbent_metrics == pytest.approx(second.metrics, rel=1e-5)
    assert second.incumbent_metrics["test_ndcg_at_5"] > second.baseline_metrics["test_ndcg_at_5"]
    # a different split (another seed) is another question: the figures differ
    other = train(frame, None, "lowrank_ease", {"dimensions": 4}, k=5, seed=7, incumbent=first.model)
    assert other.incumbent_metrics["test_ndcg_at_5"] != pytest.approx(second.incumbent_metrics["test_ndcg_at_5"])
