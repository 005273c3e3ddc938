"""Where the lowrank_ease defaults come from: a seeded random search (models.search) on Last.fm.

The search never sees the protocol's test part: a second per-user 20% holdout (seed 7) of the
protocol's training part is the validation split. Prints every trial and the best parameters.

    .venv/bin/python -m bench.tune_lastfm [--data ../shared/data/hetrec-lastfm] [--trials 12]
"""

from __future__ import annotations

import os

os.environ.update({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})

import argparse
from pathlib import Path

from bench.lastfm import DEFAULT_FOLDER, listens  # noqa: E402
from models.evaluation import random_holdout  # noqa: E402
from models.interactions import Interactions  # noqa: E402
from models.lowrank_ease import DEFAULTS  # noqa: E402
from models.search import LogUniform, Uniform, random_search, search  # noqa: E402
from models.weighting import count_weights  # noqa: E402

SPACE = {
    "regularization": LogUniform(0.1, 4.0),
    "popularity_exponent": Uniform(0.0, 0.4),
    "user_norm_exponent": Uniform(0.0, 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    frame = listens(args.data)
    matrix = Interactions.from_frame(frame.assign(weight=count_weights(frame["count"].to_numpy())))
    protocol = random_holdout(matrix, test_share=0.2, min_items=5, seed=42)
    validation = random_holdout(protocol.train, test_share=0.2, min_items=5, seed=7)

    def show(trial):
        params = ", ".join(f"{k}={v:.3g}" for k, v in trial.params.items())
        print(
            f"trial {trial.number:2d}  ndcg@10 {trial.metrics['ndcg_at_10']:.4f}  precision@10 "
            f"{trial.metrics['precision_at_10']:.4f}  fit {trial.fit_seconds:.1f}s  {params}",
            flush=True,
        )

    print("current defaults:", {k: DEFAULTS[k] for k in SPACE})
    search("lowrank_ease", [{}], validation, callback=show)
    result = random_search("lowrank_ease", SPACE, validation, n_trials=args.trials, seed=0, callback=show)
    print(
        "best:",
        {k: round(v, 3) for k, v in result.best.params.items()},
        f"ndcg@10 {result.best.metrics['ndcg_at_10']:.4f}",
    )


if __name__ == "__main__":
    main()
