"""What the promotion gate sees after a shift in taste, offline: which split compares like with like.

The scenario of ``bench/taste_shift.py`` without the API: the same synthetic world (5,000 tracks, 1,000
listeners, 100,000 events over 30 days), version 1 trained on it, then its 100 listeners with about
100 earlier events each like and complete 15 tracks of the genre least in their history (3,000 events
a second after the history ends), and version 2 trained on everything with version 1 as the incumbent
(``models.training.train(incumbent=...)``, what the training asset does). Prints NDCG@10 of version 2
against version 1 on:

1. the logged figures: version 2 on its split, version 1 on its own (the gate before issue 21's fix);
2. every held-out pair of version 2's random split, version 1 through its fold-in: most of those pairs
   are ones version 1 trained on;
3. the held-out pairs of that split version 1 never trained on (``models.evaluation.head_to_head``:
   the gate now);
4. a temporal split (each listener's newest 20% of pairs held out, version 2's model refit without
   them), on every held-out pair and on those version 1 never trained on.

Seconds only (no timing goal). ``--half-life`` sets the recency half-life (default 21 days, the setting's).

    .venv/bin/python -m bench.gate_split [--half-life DAYS] [--seed N]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.serving_support.shift import scenario
from core.synthetic import SyntheticWorld
from models import create
from models.evaluation import (
    evaluate,
    evaluate_incumbent,
    head_to_head,
    random_holdout,
    unseen_pairs,
)
from models.evaluation.splits import _split_by_mask, last_seen_matrix
from models.training import build_inputs, train
from models.weighting import graded_interactions

METRIC = "ndcg_at_10"


def newest_holdout(frame: pd.DataFrame, matrix, share: float = 0.2, min_items: int = 5):
    """Each user with at least ``min_items`` pairs holds out their newest ``share`` (ties by position)."""
    m = matrix.matrix.tocsr()
    m.sort_indices()
    seen = last_seen_matrix(frame, matrix)
    seen.sort_indices()
    test = np.zeros(m.nnz, dtype=bool)
    for u in range(m.shape[0]):
        start, end = m.indptr[u], m.indptr[u + 1]
        if end - start >= min_items:
            n_test = max(1, int(round(share * (end - start))))
            test[start + np.argsort(-seen.data[start:end], kind="stable")[:n_test]] = True
    return _split_by_mask(matrix, m, test, name="newest")


def line(label: str, mine: dict, theirs: dict) -> None:
    verdict = "promoted" if mine[METRIC] > theirs[METRIC] else "rejected"
    print(f"{label:<64} {mine[METRIC]:>8.4f} {theirs[METRIC]:>8.4f} {int(mine['users']):>6} users  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half-life", type=float, default=21.0, help="recency half-life in days (0: none)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the tracks each listener takes to")
    args = parser.parse_args()
    world = SyntheticWorld.generate(5000, 1000, seed=7)  # the pipeline's world at bench/taste_shift.py's sizes
    end = date(2026, 1, 1)  # a fixed end: the figures do not depend on the day they are taken
    events, tracks = world.events(100_000, days=30, end=end), world.tracks
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "events").mkdir()
        tracks.to_parquet(Path(tmp) / "tracks.parquet")
        events.to_parquet(Path(tmp) / "events" / "part.parquet")
        listeners, genre, chosen = scenario(Path(tmp), np.random.default_rng(args.seed))
    when = pd.Timestamp(end, tz="UTC") + timedelta(seconds=1)
    shift = pd.DataFrame(
        [
            {
                "user_id": u,
                "track_id": t,
                "type": kind,
                "timestamp": when,
                "ms_played": 240_000 if kind == "track_completed" else None,
            }
            for u in listeners
            for t in chosen[u]
            for kind in ("like", "track_completed")
        ]
    )
    durations = tracks.set_index("track_id")["duration_ms"]

    def grade(frame):
        return graded_interactions(frame, durations, args.half_life or None)

    before, after = grade(events), grade(pd.concat([events, shift], ignore_index=True))
    print(f"{len(listeners)} listeners take to '{genre}' ({len(shift):,} events); half-life {args.half_life:g} days")

    v1 = train(before, tracks, "lowrank_ease", k=10)
    v2 = train(after, tracks, "lowrank_ease", k=10, incumbent=v1.model)
    print(f"\n{'NDCG@10, version 2 vs version 1, on':<64} {'v2':>8} {'v1':>8}")
    line(
        "1. logged: each on its own split (the gate before)",
        {k.removeprefix("test_"): v for k, v in v2.metrics.items()},
        {k.removeprefix("test_"): v for k, v in v1.metrics.items()},
    )

    matrix, features = build_inputs(after, tracks)
    split = random_holdout(matrix, test_share=0.2, min_items=5, seed=42)  # train()'s split
    candidate = create("lowrank_ease").fit(split.train, features)
    line("2. v2's random split, every held-out pair", evaluate(candidate, split), evaluate_incumbent(v1.model, split))
    versus = head_to_head(candidate, v1.model, split)
    line(f"3. the same, the {versus.pairs} pairs v1 never trained on (the gate now)", versus.model, versus.incumbent)

    newest = newest_holdout(after[after["weight"] > 0], matrix)
    refit = create("lowrank_ease").fit(newest.train, features)
    line(
        "4. each listener's newest 20%, every held-out pair",
        evaluate(refit, newest),
        evaluate_incumbent(v1.model, newest),
    )
    fresh = unseen_pairs(newest, v1.model)
    line(
        f"   the same, the {fresh.test.nnz} pairs v1 never trained on",
        evaluate(refit, fresh),
        evaluate_incumbent(v1.model, fresh),
    )


if __name__ == "__main__":
    main()
