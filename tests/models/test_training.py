"""The training procedure behind the asset and the CLI: held-out metrics, then a refit on everything."""

from models.training import train


def test_training_reports_held_out_metrics_for_model_and_baseline(blocks):
    frame = blocks.to_frame()
    result = train(frame, None, "lightfm", {"no_components": 8, "epochs": 30, "num_threads": 1}, k=5)
    assert result.metrics["test_precision_at_5"] > result.baseline_metrics["test_precision_at_5"]
    assert result.data["test_interactions"] > 0 and len(result.fingerprint) == 16
    assert result.model.train_matrix.nnz == blocks.nnz  # refit on everything after evaluation
