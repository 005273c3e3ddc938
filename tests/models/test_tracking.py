"""MLflow logging, registration and the promotion gate, against a real tracking store in tmp."""

import pandas as pd
import pytest

from models import create, tracking
from models.training import train


def test_gate_requires_beating_baseline_and_champion():
    metric = "test_ndcg_at_10"
    ok = tracking.decide_promotion(metric, {metric: 0.30}, None, {metric: 0.10}, margin=0.05)
    assert ok.promoted and "first model" in ok.reason
    no_base = tracking.decide_promotion(metric, {metric: 0.104}, None, {metric: 0.10}, margin=0.05)
    assert not no_base.promoted and "popularity" in no_base.reason
    no_champ = tracking.decide_promotion(metric, {metric: 0.30}, {metric: 0.29}, {metric: 0.10}, margin=0.05)
    assert not no_champ.promoted and "champion" in no_champ.reason
    better = tracking.decide_promotion(metric, {metric: 0.33}, {metric: 0.30}, {metric: 0.10}, margin=0.05)
    assert better.promoted


@pytest.fixture
def mlflow_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.configure(uri, tmp_path / "artifacts", "test")
    return uri


def test_log_register_promote_and_roll_back(mlflow_store, blocks, tmp_path):
    name = "test-model"
    versions = []
    for seed in (1, 2):
        model = create("popularity").fit(blocks)
        folder = model.save(tmp_path / f"m{seed}")
        record = tracking.log_model_run(folder, name, "popularity", {"seed": seed}, {"test_ndcg_at_10": 0.1 * seed}, {"dataset_fingerprint": "abc"})
        decision = tracking.decide_promotion("test_ndcg_at_10", {"test_ndcg_at_10": 0.1 * seed}, None, None, 0.0)
        tracking.record_decision(name, record.version, decision)
        tracking.set_alias(name, tracking.CHAMPION, record.version)
        versions.append(record.version)
    assert tracking.alias_version(name, tracking.CHAMPION) == versions[1]
    assert tracking.run_metrics(name, versions[1])["test_ndcg_at_10"] == pytest.approx(0.2)

    previous, now = tracking.rollback(name)
    assert (previous, now) == (versions[1], versions[0])
    assert tracking.alias_version(name, tracking.CHAMPION) == versions[0]
    with pytest.raises(LookupError):
        tracking.rollback(name)  # nothing promoted before version 1

    restored = tracking.model_dir(name, versions[0], tmp_path / "download")
    assert (restored / "model.json").exists()


def test_pyfunc_answers_with_k_param(mlflow_store, blocks, tmp_path):
    import mlflow

    model = create("popularity").fit(blocks)
    record = tracking.log_model_run(model.save(tmp_path / "m"), "pyfunc-model", "popularity", {}, {}, {})
    loaded = mlflow.pyfunc.load_model(f"models:/pyfunc-model/{record.version}")
    users = [blocks.user_ids[0], "nobody"]
    out = loaded.predict(pd.DataFrame({"user_id": users}), params={"k": 3})
    assert list(out.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(out) == 3 and set(out["user_id"]) == {blocks.user_ids[0]}
    assert not set(out["item_id"]) & set(blocks.item_ids[blocks.matrix[0].indices])


def test_training_reports_held_out_metrics_for_model_and_baseline(blocks):
    frame = blocks.to_frame()
    result = train(frame, None, "lightfm", {"no_components": 8, "epochs": 30, "num_threads": 1}, k=5)
    assert result.metrics["test_precision_at_5"] > result.baseline_metrics["test_precision_at_5"]
    assert result.data["test_interactions"] > 0 and len(result.fingerprint) == 16
    assert result.model.train_matrix.nnz == blocks.nnz  # refit on everything after evaluation
