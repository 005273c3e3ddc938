"""Approximate inner-product search: faiss's HNSW (what :mod:`models.ann` uses, with its bias head)
against hnswlib, usearch and Spotify's Voyager, on the vectors the API serves.

Trains the default algorithm on a synthetic world (``--tracks`` tracks, a fifth as many users, 7.5
events per track) and indexes its item vectors (64-d, the last coordinate an item bias; users have 1
there) with each library twice: in its inner-product space, and in Euclidean space with the extra
coordinate ``sqrt(M² - |x|²)`` that turns maximum inner product into nearest neighbour. Prints per
variant: build seconds, memory (the serialised index, and the RSS growth of the build), then per
``ef`` the mean query latency (one query at a time, as the API asks) and recall@10 against exact
scoring for 300 users. ``--synthetic`` indexes random low-rank-like vectors instead (no training).
Every library at M=16, ef_construction=100, and the served index at its own M.

    .venv/bin/python -m bench.ann_libraries [--tracks 20000] [--threads 2] [--synthetic]
hnswlib, usearch and Voyager come with the bench extra (pip install -e ".[bench]"; hnswlib compiles).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psutil

DIM, USERS, EFS = 64, 300, (50, 100, 200)


def trained_vectors(n: int) -> tuple[np.ndarray, np.ndarray]:
    from core.synthetic import SyntheticWorld
    from models import DEFAULT_ALGORITHM, create
    from models.training import build_inputs
    from models.weighting import graded_interactions

    world = SyntheticWorld.generate(n, max(100, n // 5), seed=11)
    events = world.events(int(n * 7.5), days=30)
    graded = graded_interactions(events, world.tracks.set_index("track_id")["duration_ms"])
    model = create(DEFAULT_ALGORITHM).fit(*build_inputs(graded, world.tracks))
    return model.item_vectors().astype(np.float32), model.user_vectors()[:USERS].astype(np.float32)


def vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(np.arange(1, DIM))
    items = np.hstack([rng.standard_normal((n, DIM - 1)) * scale, rng.normal(0, 0.3, (n, 1))]).astype(np.float32)
    users = np.hstack([rng.standard_normal((USERS, DIM - 1)) * scale, np.ones((USERS, 1))]).astype(np.float32)
    return items, users


def augmented(items: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = (items**2).sum(axis=1)
    extra = np.sqrt(norms.max() - norms)[:, None]
    return np.hstack([items, extra]).astype(np.float32), np.hstack([users, np.zeros((len(users), 1))]).astype(
        np.float32
    )


def voyager_space(name: str):
    import voyager

    return getattr(voyager.Space, name)


def rss() -> float:
    return psutil.Process().memory_info().rss / 2**20


def voyager_variant(space, data: np.ndarray, threads: int):
    import voyager

    index = voyager.Index(space, data.shape[1], M=16, ef_construction=100, max_elements=len(data))
    index.add_items(data, num_threads=threads)

    def query(vector, ef):
        return index.query(vector, k=10, query_ef=ef)[0]

    return query, len(index.as_bytes())


def served_variant(data: np.ndarray, threads: int):
    from models.ann import InnerProductIndex

    index = InnerProductIndex.build(data, threads, bias_head=True)

    def query(vector, ef):
        rows = index.search(vector, 10, ef)
        return rows[np.argsort(-(data[rows] @ vector))[:10]]

    return query, len(index.to_bytes())


def faiss_variant(data: np.ndarray, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(data)
    faiss.omp_set_num_threads(1)

    def query(vector, ef):
        return index.search(vector[None], 10, params=faiss.SearchParametersHNSW(efSearch=ef))[1][0]

    return query, len(faiss.serialize_index(index))


def usearch_variant(data: np.ndarray, threads: int):
    from usearch.index import Index

    index = Index(ndim=data.shape[1], metric="ip", connectivity=16, expansion_add=100, dtype="f32")
    index.add(np.arange(len(data)), data, threads=threads)

    def query(vector, ef):
        index.expansion_search = ef
        return index.search(vector, 10).keys

    return query, index.serialized_length


def hnswlib_variant(space: str, data: np.ndarray, threads: int):
    import hnswlib

    index = hnswlib.Index(space, data.shape[1])
    index.init_index(len(data), M=16, ef_construction=100)
    index.add_items(data, num_threads=threads)

    def query(vector, ef):
        index.set_ef(ef)
        return index.knn_query(vector, k=10)[0][0]

    path = f"/tmp/ann-bench-{os.getpid()}.bin"
    index.save_index(path)
    size = os.path.getsize(path)
    os.unlink(path)
    return query, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--synthetic", action="store_true", help="random low-rank-like vectors instead of a trained model's"
    )
    args = parser.parse_args()
    items, users = vectors(args.tracks) if args.synthetic else trained_vectors(args.tracks)
    exact = np.argsort(-(users @ items.T), axis=1)[:, :10]
    aug_items, aug_users = augmented(items, users)
    variants = [
        ("served (faiss M32 + head)", lambda: served_variant(items, args.threads), users),
        ("faiss inner product", lambda: faiss_variant(items, args.threads), users),
    ]
    optional = [
        ("usearch", lambda: [("usearch inner product", lambda: usearch_variant(items, args.threads), users)]),
        (
            "hnswlib",
            lambda: [
                ("hnswlib inner product", lambda: hnswlib_variant("ip", items, args.threads), users),
                ("hnswlib euclidean+1", lambda: hnswlib_variant("l2", aug_items, args.threads), aug_users),
            ],
        ),
        (
            "voyager",
            lambda: [
                (
                    "voyager inner product",
                    lambda: voyager_variant(voyager_space("InnerProduct"), items, args.threads),
                    users,
                ),
                (
                    "voyager euclidean+1",
                    lambda: voyager_variant(voyager_space("Euclidean"), aug_items, args.threads),
                    aug_users,
                ),
            ],
        ),
    ]
    for module, more in optional:
        try:
            __import__(module)
        except ImportError:
            print(f'{module} not installed (pip install -e ".[bench]"): left out')
            continue
        variants += more()
    kind = "synthetic" if args.synthetic else "the default algorithm's"
    print(f"{len(items):,} x {items.shape[1]} item vectors ({kind}), {len(users)} users, {args.threads} build threads")
    print(
        f"{'variant':26s} {'build s':>8s} {'index MiB':>9s} {'RSS +MiB':>8s} {'ef':>5s} {'query us':>9s} {'recall@10':>9s}"
    )
    for name, build, queries in variants:
        before, started = rss(), time.perf_counter()
        query, size = build()
        seconds, grown = time.perf_counter() - started, rss() - before
        for ef in EFS:
            started = time.perf_counter()
            found = [query(q, ef) for q in queries]
            latency = (time.perf_counter() - started) / len(queries) * 1e6
            recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact)])
            print(
                f"{name:26s} {seconds:8.1f} {size / 2**20:9.0f} {grown:8.0f} {ef:5d} {latency:9.0f} {recall:9.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
