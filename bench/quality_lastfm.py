"""Recommendation quality on HetRec Last.fm, the protocol of issue 4.

Per user with at least 5 artists, a seeded random 20% of their artists is held out; listen counts
become log1p weights (models.weighting); training items are excluded from the ranking; k = 10.
Our default goes through the real command line (`echotune train` on a CSV of the training listens,
then `echotune recommend`); the other rows fit models.create(...) or the libraries themselves
(implicit ALS, LightFM) when they are installed. Every model is fitted in a fresh process so its
peak memory (max RSS of that process, data included) is its own.

    .venv/bin/python -m bench.quality_lastfm [--data ../shared/data/hetrec-lastfm]
"""

from __future__ import annotations

import os

os.environ.update({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.lastfm import DEFAULT_FOLDER, in_fresh_process, listens, tag_assignments, tag_features  # noqa: E402
from models import create  # noqa: E402
from models.evaluation import metrics as m  # noqa: E402
from models.evaluation import random_holdout  # noqa: E402
from models.interactions import Interactions  # noqa: E402
from models.ranking import top_k  # noqa: E402
from models.weighting import count_weights  # noqa: E402

K = 10


def protocol_split(folder: Path):
    frame = listens(folder)
    weighted = frame.assign(weight=count_weights(frame["count"].to_numpy()))
    return frame, random_holdout(Interactions.from_frame(weighted), test_share=0.2, min_items=5, seed=42)


def ranking_metrics(recommended: np.ndarray, relevant) -> dict[str, float]:
    return {
        "precision@10": float(np.nanmean(m.precision_at_k(recommended, relevant, K))),
        "recall@10": float(np.nanmean(m.recall_at_k(recommended, relevant, K))),
        "ndcg@10": float(np.nanmean(m.ndcg_at_k(recommended, relevant, K))),
        "map@10": float(np.nanmean(m.average_precision_at_k(recommended, relevant, K))),
    }


def _rank(scores_of, split) -> dict[str, float]:
    users = split.test_users
    lists = [
        top_k(scores_of(users[s : s + 1000]), K, exclude=split.train.matrix[users[s : s + 1000]])[0]
        for s in range(0, len(users), 1000)
    ]
    return ranking_metrics(np.vstack(lists), split.test.matrix[users])


def fit_ours(folder: Path, algorithm: str, params: dict, with_tags: bool = False) -> dict:
    """One of our algorithms through models.create; returns metrics, fit seconds and dimension."""
    _, split = protocol_split(folder)
    features = tag_features(tag_assignments(folder), split.train.item_ids) if with_tags else None
    started = time.perf_counter()
    model = create(algorithm, **params).fit(split.train, features)
    fit_seconds = time.perf_counter() - started
    return {**_rank(model.scores, split), "fit_s": fit_seconds, "dim": model.item_vectors().shape[1]}


def fit_implicit_als(folder: Path) -> dict:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    _, split = protocol_split(folder)
    matrix = split.train.matrix.tocsr()
    model = AlternatingLeastSquares(factors=64, num_threads=2, random_state=42)
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    fit_seconds = time.perf_counter() - started
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return {**_rank(lambda u: users[u] @ items.T, split), "fit_s": fit_seconds, "dim": users.shape[1]}


def fit_lightfm_library(folder: Path) -> dict:
    import scipy.sparse as sp
    from lightfm import LightFM

    _, split = protocol_split(folder)
    coo = split.train.matrix.tocoo()
    binary = sp.coo_matrix((np.ones_like(coo.data), (coo.row, coo.col)), shape=coo.shape)
    model = LightFM(no_components=64, loss="warp", random_state=np.random.RandomState(42))
    started = time.perf_counter()
    model.fit(binary, sample_weight=coo, epochs=30, num_threads=2)
    fit_seconds = time.perf_counter() - started
    n_items = coo.shape[1]

    def scores(users):
        return np.vstack([model.predict(int(u), np.arange(n_items), num_threads=2) for u in users])

    return {**_rank(scores, split), "fit_s": fit_seconds, "dim": 64 + 1}


def data_only(folder: Path) -> dict:
    protocol_split(folder)
    return {}


def default_through_cli(folder: Path, workdir: Path) -> tuple[dict, float]:
    """Train and recommend with `echotune train` / `echotune recommend` on the training listens (as raw
    counts: the command turns them into log1p weights); measure the recommendations here."""
    frame, split = protocol_split(folder)
    train = split.train.to_frame()
    counts = frame.set_index(["user_id", "item_id"])["count"]
    train["count"] = counts.reindex(pd.MultiIndex.from_frame(train[["user_id", "item_id"]])).to_numpy()
    train[["user_id", "item_id", "count"]].to_csv(workdir / "train.csv", index=False)
    test_users = split.train.user_ids[split.test_users]
    (workdir / "users.txt").write_text("\n".join(test_users) + "\n")
    cli = [sys.executable, "-m", "echotune.cli"]
    trained = subprocess.run(
        [*cli, "train", "--interactions", str(workdir / "train.csv"), "--out", str(workdir / "model")],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the only child so far
    subprocess.run(
        [
            *cli,
            "recommend",
            "--model",
            str(workdir / "model"),
            "--users",
            str(workdir / "users.txt"),
            "--k",
            str(K),
            "--out",
            str(workdir / "recs.csv"),
        ],
        check=True,
        capture_output=True,
    )
    recs = pd.read_csv(workdir / "recs.csv", dtype={"user_id": str, "item_id": str})
    user_row = {u: i for i, u in enumerate(test_users)}
    item_col = split.train.item_index
    recommended = np.full((len(test_users), K), -1, dtype=np.int64)
    recommended[recs["user_id"].map(user_row).to_numpy(), recs["rank"].to_numpy() - 1] = (
        recs["item_id"].map(item_col).to_numpy()
    )
    result = {
        **ranking_metrics(recommended, split.test.matrix[split.test_users]),
        "fit_s": summary["fit_seconds"],
        "dim": summary["dimensions"],
    }
    return result, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_FOLDER, help="the hetrec-lastfm folder")
    folder = parser.parse_args().data
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        result, peak = default_through_cli(folder, Path(tmp))
        rows.append(("ours: default lowrank_ease via `echotune train`+`recommend`", result, peak))
    runs = [
        ("ours: popularity", fit_ours, (folder, "popularity", {})),
        ("ours: lowrank_ease 64-d (library call)", fit_ours, (folder, "lowrank_ease", {})),
        ("ours: lowrank_ease 64-d, randomized SVD", fit_ours, (folder, "lowrank_ease", {"svd_method": "randomized"})),
        ("ours: lowrank_ease 32-d", fit_ours, (folder, "lowrank_ease", {"dimensions": 32})),
        ("ours: lowrank_ease 128-d", fit_ours, (folder, "lowrank_ease", {"dimensions": 128})),
        ("ours: ease lambda=200, items >= 2 users", fit_ours, (folder, "ease", {"regularization": 200.0})),
        ("ours: lightfm warp 64, 30 epochs", fit_ours, (folder, "lightfm", {})),
        ("ours: content (1,000 tags, 64-d)", fit_ours, (folder, "content", {}, True)),
        ("library: implicit ALS 64 factors", fit_implicit_als, (folder,)),
        ("library: lightfm WARP 64, 30 epochs", fit_lightfm_library, (folder,)),
        ("(data loading only)", data_only, (folder,)),
    ]
    for name, fn, args in runs:
        try:
            result, peak = in_fresh_process(fn, *args)
        except (RuntimeError, ImportError) as error:
            print(f"{name}: skipped ({error})", flush=True)
            continue
        rows.append((name, result, peak))
        print(f"done: {name}", file=sys.stderr, flush=True)
    table = pd.DataFrame(
        [
            {
                "model": n,
                **{k: r.get(k, np.nan) for k in ("precision@10", "ndcg@10", "recall@10", "map@10", "dim", "fit_s")},
                "peak_MB": p,
            }
            for n, r, p in rows
        ]
    )
    print(f"HetRec Last.fm, per-user 20% holdout (seed 42), users with >= 5 artists, k={K}, 2 threads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        "reference (issue 4, measured before): popularity 0.067/0.077, implicit ALS 0.148/0.164, "
        "LightFM WARP 0.164/0.199, EASE lambda=200 0.184/0.228 (precision@10/NDCG@10)"
    )


if __name__ == "__main__":
    main()
