"""`echotune train`, `recommend` and `evaluate` on a tiny interactions file."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from echotune.cli import main


@pytest.fixture
def listens(tmp_path):
    """Two taste groups of listeners (counts), as a CSV with track_id and count columns."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u:02d}", f"t{(u % 2) * 20 + i:02d}", int(rng.integers(1, 300)))
        for u in range(30)
        for i in rng.choice(20, 8, replace=False)
    ]
    path = tmp_path / "listens.csv"
    pd.DataFrame(rows, columns=["user_id", "track_id", "count"]).to_csv(path, index=False)
    return path


def test_train_then_recommend_writes_unplayed_items_per_user(listens, tmp_path):
    runner = CliRunner()
    trained = runner.invoke(
        main,
        ["train", "--interactions", str(listens), "--out", str(tmp_path / "model"), "--params", '{"dimensions": 8}'],
    )
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output.strip().splitlines()[-1])
    assert summary["algorithm"] == "lowrank_ease" and summary["users"] == 30 and summary["dimensions"] == 8

    (tmp_path / "users.txt").write_text("u00\nu01\nstranger\n")
    out = tmp_path / "recs.csv"
    done = runner.invoke(
        main,
        [
            "recommend",
            "--model",
            str(tmp_path / "model"),
            "--users",
            str(tmp_path / "users.txt"),
            "--k",
            "5",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert set(recs["user_id"]) == {"u00", "u01"} and (recs.groupby("user_id")["rank"].max() == 5).all()
    played = pd.read_csv(listens, dtype=str)
    for user, group in recs.groupby("user_id"):
        assert not set(group["item_id"]) & set(played.loc[played["user_id"] == user, "track_id"])
        own = 0 if user == "u00" else 1  # even users listen to t00-t19, odd ones to t20-t39
        assert (group["item_id"].str[1:].astype(int) // 20 == own).all()


def test_evaluate_prints_every_metric_as_json(listens):
    result = CliRunner().invoke(
        main, ["evaluate", "--interactions", str(listens), "--algorithm", "popularity", "--k", "5"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    for key in (
        "precision_at_5",
        "recall_at_5",
        "ndcg_at_5",
        "map_at_5",
        "hit_rate_at_5",
        "auc",
        "coverage",
        "novelty",
        "diversity",
    ):
        assert key in metrics
    assert metrics["algorithm"] == "popularity" and metrics["split"] == "random"


def test_wrong_input_errors_name_the_file_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "plays": [3]}).to_csv(bad, index=False)
    result = CliRunner().invoke(main, ["train", "--interactions", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code != 0 and "bad.csv" in result.output and "'weight' or 'count'" in result.output
    pd.DataFrame({"user": ["a"], "item_id": ["x"], "count": [3]}).to_csv(bad, index=False)
    result = CliRunner().invoke(main, ["train", "--interactions", str(bad), "--out", str(tmp_path / "m")])
    assert "missing column 'user_id'" in result.output


def test_item_features_file_and_unknown_algorithm(listens, tmp_path):
    features = tmp_path / "features.csv"
    tracks = [f"t{i:02d}" for i in range(40)]
    pd.DataFrame({"track_id": tracks, "feature": [f"genre:{int(t[1:]) // 20}" for t in tracks]}).to_csv(
        features, index=False
    )
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            "--interactions",
            str(listens),
            "--item-features",
            str(features),
            "--algorithm",
            "genre_popularity",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", "--interactions", str(listens), "--algorithm", "nope"])
    assert result.exit_code != 0 and "unknown algorithm 'nope'" in result.output


def test_a_weight_column_of_raw_counts_is_flagged(tmp_path):
    """What a new user tripped on: Last.fm's listen counts under a column named `weight` were taken as
    final weights, silently (NDCG@10 0.17 instead of 0.25)."""
    rng = np.random.default_rng(1)
    counts = np.maximum(1, rng.zipf(1.6, size=400) * 10).clip(max=200_000)
    frame = pd.DataFrame({"user_id": [f"u{i % 40}" for i in range(400)], "item_id": [f"a{i % 97}" for i in range(400)]})
    runner = CliRunner()
    for column, values, flagged in (
        ("weight", counts, True),
        ("count", counts, False),
        ("weight", np.log1p(counts), False),
    ):
        path = tmp_path / f"{column}-{flagged}.csv"
        frame.assign(**{column: values}).to_csv(path, index=False)
        result = runner.invoke(
            main, ["train", "--interactions", str(path), "--out", str(tmp_path / "m"), "--params", '{"dimensions": 4}']
        )
        assert result.exit_code == 0, result.output
        assert ("look like raw listen counts" in result.stderr) is flagged, (column, result.stderr)
        if flagged:
            assert "Name the column 'count'" in result.stderr
