"""Fit seconds and peak memory of the default model at 1M, 5M and 20M interactions.

Each size is a synthetic users x items matrix with the skew of real listening (item popularity from
a Zipf law, user activity log-normal, tastes from a few latent groups); sizes and shapes:

    1M interactions:   50,000 users x   200,000 items
    5M interactions:  100,000 users x   500,000 items
    20M interactions: 200,000 users x 1,000,000 items

Every fit runs in a fresh process, so its peak RSS (the process's high-water mark, data included)
is its own; "data only" builds the same matrix without fitting, so peak minus that is the fit's
memory. The default algorithm with its default parameters (``svd_method`` auto: the randomized SVD
at these sizes) is what the pipeline trains. Besides wall seconds, the fit's CPU seconds (all its
threads), which other load on the machine changes far less, and their ratio to the first size's.

    .venv/bin/python -m bench.training [--sizes 1000000,5000000,20000000]
"""

from __future__ import annotations

import os

os.environ.update({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})

import argparse
import time

import numpy as np
import scipy.sparse as sp

from bench.lastfm import in_fresh_process  # noqa: E402

SHAPES = {1_000_000: (50_000, 200_000), 5_000_000: (100_000, 500_000), 20_000_000: (200_000, 1_000_000)}


def interactions(n: int, seed: int = 0):
    """About ``n`` distinct (user, item) pairs with log1p-like weights, as ``models.Interactions``."""
    from models.interactions import Interactions

    n_users, n_items = SHAPES.get(n, (max(100, n // 20), max(100, n // 5)))
    rng = np.random.default_rng(seed)
    groups = 32
    user_group = rng.integers(0, groups, n_users)
    item_group = rng.integers(0, groups, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    activity = rng.lognormal(0.0, 1.0, n_users)
    draws = int(n * 1.15)  # duplicates are merged below
    users = rng.choice(n_users, size=draws, p=activity / activity.sum())
    # two in three listens from the user's taste group, the rest from anywhere, by popularity
    own = rng.random(draws) < 2 / 3
    by_group = [np.flatnonzero(item_group == g) for g in range(groups)]
    items = rng.choice(n_items, size=draws, p=popularity / popularity.sum())
    for g in range(groups):
        rows = np.flatnonzero(own & (user_group[users] == g))
        pool = by_group[g]
        weights = popularity[pool] / popularity[pool].sum()
        items[rows] = pool[rng.choice(len(pool), size=len(rows), p=weights)]
    matrix = sp.csr_matrix(
        (np.log1p(rng.integers(1, 50, draws)).astype(np.float32), (users, items)), shape=(n_users, n_items)
    )
    matrix.sum_duplicates()
    return Interactions(
        matrix, np.array([f"u{i}" for i in range(n_users)]), np.array([f"i{j}" for j in range(n_items)])
    )


def data_only(n: int) -> dict:
    data = interactions(n)
    return {"users": data.n_users, "items": data.n_items, "nnz": data.nnz}


def fit_default(n: int) -> dict:
    from models import DEFAULT_ALGORITHM, create

    data = interactions(n)
    started, cpu = time.perf_counter(), time.process_time()
    model = create(DEFAULT_ALGORITHM).fit(data)
    return {
        "fit_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "algorithm": DEFAULT_ALGORITHM,
        "svd_method": model.params.get("svd_method", "-"),
        "users": data.n_users,
        "items": data.n_items,
        "nnz": data.nnz,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,20000000", help="comma-separated interaction counts")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(
        f"{'interactions':>12} {'users':>8} {'items':>9} {'svd':>10} {'fit_s':>7} {'cpu_s':>7} {'x 1st':>6} {'peak_MB':>8} {'data_MB':>8} {'fit_MB':>7}",
        flush=True,
    )
    first = None
    for n in sizes:
        _, data_peak = in_fresh_process(data_only, n)
        result, peak = in_fresh_process(fit_default, n)
        first = first or result["cpu_s"]
        print(
            f"{result['nnz']:>12,} {result['users']:>8,} {result['items']:>9,} {result['svd_method']:>10} {result['fit_s']:7.1f} {result['cpu_s']:7.1f} "
            f"{result['cpu_s'] / first:6.2f} {peak:8.0f} {data_peak:8.0f} {peak - data_peak:7.0f}",
            flush=True,
        )
    print(f"default algorithm: {result['algorithm']}; {os.cpu_count()} cores, BLAS threads 2")


if __name__ == "__main__":
    main()
