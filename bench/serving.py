"""Recommendation API throughput and latency, next to a bare FastAPI floor app, per catalog size.

For each size of ``--tracks`` (default 50,000): builds a stack on a synthetic catalog of that many
tracks and a fifth as many users (the default algorithm trained on 8 events per track, registered in
a scratch MLflow store and released to an embedded Redis through ``core.release``, which logs the
version's ANN index when the catalog has ``--ann-min-tracks`` tracks or more), starts
``echotune serve --workers 2`` (API keys, rate limits, metrics, JSON access logs: the production
configuration, loading the index logged at release), then drives ``GET /recommendations/{user}``
(random users, count 20) and ``/similar`` with wrk for 20 s at 8 and at 64 connections. The same load
goes to the floor app (always a 50,000 x 64 dot product, top-20, JSON; 2 uvicorn workers, one BLAS
thread each). Prints requests/s, P50/P95/P99 and errors, ours/floor, recall@10 of the served list
against ``exact=true`` for 1,000 random users with and without a genre filter, the release's seconds
(publish and, above the threshold, the index build) and the index's size, and the API's RSS.

Every size trains the model (about 4 minutes at 20,000 tracks on this 2-core machine when it is
busy); 1,000,000 tracks (training plus an index build estimated at 15+ minutes) has not been run here.

Targets (issue 15): at 50,000 tracks >= 0.9 of the floor's requests/s at 8 connections with P99 within
1.25x the floor's; at 1,000,000 tracks the same against the 50,000-track floor, recall@10 >= 0.95
unfiltered and >= 0.90 with a genre filter; zero errors at 64 connections.

``--cluster`` also publishes the model to a local 3-master Redis Cluster, starts a second API on it
(ECHOTUNE_REDIS_CLUSTER=true) and drives ``GET /recommendations`` there the same way, printing its
requests/s and P99 as ratios to the single-node API measured in the same run (issue 16).

    .venv/bin/python -m bench.serving [--tracks 50000,200000,1000000] [--seconds 20] [--cluster]
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    KEY,
    ONE_THREAD,
    SUPPORT,
    free_port,
    require_wrk,
    scratch_redis,
    start,
    start_api,
    stop,
    train_synthetic,
    wait_ready,
)
from models.ann import ef_for

ADMIN_KEY = "bench-admin-key-0123456789abcdef"  # exact=true, for the recall figures
MLFLOW = {"ECHOTUNE_MLFLOW_EXPERIMENT": "bench", "ECHOTUNE_REGISTERED_MODEL": "bench-model"}


@dataclass
class Stack:
    users: list[str]
    tracks: list[str]
    genres: list[str]  # the catalog's 20 most common genres (the filtered recall draws from them)
    release_seconds: float  # publishing the version, its ANN index included when it has one
    index_bytes: int  # 0: no index (below the threshold)


def build_stack(
    folder: Path, redis_url: str, prefix: str, n_tracks: int, ann_min_tracks: int, cluster_url: str | None = None
) -> Stack:
    """Train the default algorithm on a synthetic world of ``n_tracks`` and release it as champion
    (MLflow in ``folder``, vectors in Redis, and in the Redis Cluster at ``cluster_url`` too when given)."""
    from core import release
    from core.contracts import RedisKeys
    from core.model_registry import CHAMPION, ModelRegistry
    from core.redis_clients import redis_client
    from core.vectorstore import VectorStore

    started = time.perf_counter()
    synthetic = train_synthetic(n_tracks, max(100, n_tracks // 5), n_tracks * 8, seed=11)
    world, events, graded, model = synthetic.world, synthetic.events, synthetic.graded, synthetic.model
    trained = time.perf_counter() - started
    registry = ModelRegistry.open(
        f"sqlite:///{folder / 'mlflow.db'}",
        folder / "artifacts",
        MLFLOW["ECHOTUNE_MLFLOW_EXPERIMENT"],
        MLFLOW["ECHOTUNE_REGISTERED_MODEL"],
    )
    tags = {"trained_until_ms": str(synthetic.trained_until_ms)}
    version = registry.log_version(model.save(folder / "model"), model.name, {}, {}, tags).version
    registry.set_alias(CHAMPION, version)
    store = VectorStore(redis_client(redis_url), RedisKeys(prefix))
    started = time.perf_counter()
    release.publish_aliases(registry, store, world.tracks, aliases=(CHAMPION,), ann_min_tracks=ann_min_tracks)
    release_seconds = time.perf_counter() - started
    release.publish_played(store, graded)
    if cluster_url:
        on_cluster = VectorStore(redis_client(cluster_url, cluster=True), RedisKeys(prefix))
        release.publish_aliases(registry, on_cluster, world.tracks, aliases=(CHAMPION,), ann_min_tracks=ann_min_tracks)
        release.publish_played(on_cluster, graded)
    index = registry.ann_index(version)
    genres = world.tracks["genres"].explode().dropna().value_counts().index[:20].tolist()
    print(
        f"stack: {len(model.item_ids):,} tracks, {len(model.user_ids):,} users with vectors ({model.item_vectors().shape[1]}-d {model.name}), "
        f"{len(events):,} events, trained in {trained:.0f}s, released in {release_seconds:.0f}s",
        flush=True,
    )
    return Stack(list(model.user_ids), list(model.item_ids), genres, release_seconds, len(index) if index else 0)


def api_settings(folder: Path, redis_url: str, prefix: str, ann_min_tracks: int) -> dict[str, str]:
    """The ECHOTUNE_* settings of an API serving what :func:`build_stack` released in ``folder``."""
    return {
        **ONE_THREAD,
        **MLFLOW,
        "ECHOTUNE_HOME": str(folder),
        "ECHOTUNE_REDIS_URL": redis_url,
        "ECHOTUNE_REDIS_PREFIX": prefix,
        "ECHOTUNE_MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "ECHOTUNE_MLFLOW_ARTIFACT_ROOT": str(folder / "artifacts"),
        "ECHOTUNE_ANN_MIN_TRACKS": str(ann_min_tracks),
        "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN_KEY}:admin",
        "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
    }


def recall_against_exact(port: int, users: list[str], genres: list[str], n: int = 1000) -> tuple[float, float]:
    """Mean recall@10 of the served list against exact=true for ``n`` random users, without and with a
    random genre filter (users whose filtered exact list is empty are left out of that mean)."""
    import httpx

    rng = random.Random(7)
    plain, filtered = [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for user in rng.sample(users, min(n, len(users))):
            for params, out in (({"count": 10}, plain), ({"count": 10, "genres": rng.choice(genres)}, filtered)):
                served = client.get(f"/recommendations/{user}", params=params, headers={"X-API-Key": KEY}).json()[
                    "tracks"
                ]
                exact = client.get(
                    f"/recommendations/{user}", params={**params, "exact": "true"}, headers={"X-API-Key": ADMIN_KEY}
                ).json()["tracks"]
                if exact:
                    out.append(len({t["track_id"] for t in served} & {t["track_id"] for t in exact}) / len(exact))
    return sum(plain) / len(plain), sum(filtered) / max(1, len(filtered))


def rss_mib(process: subprocess.Popen) -> float:
    """Resident memory of a process and its children (the API's workers)."""
    import psutil

    root = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def run_wrk(url: str, connections: int, seconds: int, env: dict) -> dict:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "2s",
        "-s",
        str(SUPPORT / "wrk.lua"),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("JSON "))
    figures = json.loads(line[5:])
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--tracks", default="50000", help="comma-separated catalog sizes, e.g. 50000,200000,1000000")
    parser.add_argument(
        "--ann-min-tracks", type=int, default=100_000, help="ECHOTUNE_ANN_MIN_TRACKS of the release and the API"
    )
    parser.add_argument("--recall-users", type=int, default=1000)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also serve from a local 3-master Redis Cluster and print the ratio to one node",
    )
    args = parser.parse_args()
    require_wrk()
    summaries = []
    for n_tracks in (int(x) for x in args.tracks.split(",")):
        print(f"\n=== {n_tracks:,} tracks ===", flush=True)
        processes: list[subprocess.Popen] = []
        with scratch_redis("serving") as (folder, redis_url):
            cluster = None
            try:
                if args.cluster:
                    from core.redis_server import EmbeddedCluster

                    cluster = EmbeddedCluster(folder / "cluster")
                    cluster.start()
                summaries.append(
                    (n_tracks, _run(args, n_tracks, folder, redis_url, processes, cluster.url if cluster else None))
                )
            finally:
                for process in processes:
                    stop(process)
                if cluster is not None:
                    cluster.stop()
    print(
        "\ncost curve (req/s and P50/P99 ms of GET /recommendations; floor = the 50,000-track exact floor app, same run)"
    )
    print(
        f"{'tracks':>9s} {'c8 req/s':>9s} {'p50':>6s} {'p99':>6s} {'c64 req/s':>9s} {'p50':>6s} {'p99':>6s} {'err64':>5s} {'floor8':>7s} "
        f"{'ratio8':>6s} {'recall':>6s} {'genre':>6s} {'release s':>9s} {'idx MiB':>7s} {'RSS MiB':>7s}"
    )
    for n_tracks, f in summaries:
        eight, sixty_four = f["c8"], f["c64"]
        print(
            f"{n_tracks:9,d} {eight['rps']:9,.0f} {eight['p50_us'] / 1000:6.1f} {eight['p99_us'] / 1000:6.1f} {sixty_four['rps']:9,.0f} "
            f"{sixty_four['p50_us'] / 1000:6.1f} {sixty_four['p99_us'] / 1000:6.1f} {sixty_four['status_errors'] + sixty_four['socket_errors']:5d} "
            f"{f['floor8']['rps']:7,.0f} {eight['rps'] / f['floor8']['rps']:6.2f} {f['recall']:6.3f} {f['recall_genre']:6.3f} "
            f"{f['release_seconds']:9.0f} {f['index_bytes'] / 2**20:7.0f} {f['rss_mib']:7.0f}"
        )


def _run(
    args, n_tracks: int, folder: Path, redis_url: str, processes: list[subprocess.Popen], cluster_url: str | None = None
) -> dict:
    """Build the stack, start the API (and one on the cluster) and the floor app (appended to
    ``processes``), drive them, print; returns the size's figures for the cost curve."""
    prefix = "bench"
    stack = build_stack(folder, redis_url, prefix, n_tracks, args.ann_min_tracks, cluster_url)
    (folder / "users.txt").write_text("\n".join(stack.users))
    (folder / "tracks.txt").write_text("\n".join(stack.tracks))
    api_port, floor_port = free_port(), free_port()
    api_env = api_settings(folder, redis_url, prefix, args.ann_min_tracks)
    api = start_api(api_port, api_env, folder / "api.log")
    processes.append(api)
    floor = start(
        [
            "bench.serving_support.floor_app:app",
            "--port",
            str(floor_port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        ONE_THREAD,
        folder / "floor.log",
        module="uvicorn",
    )
    processes.append(floor)
    wait_ready(f"http://127.0.0.1:{floor_port}/recommendations/warmup")

    endpoints = [
        ("GET /recommendations", api_port, "recommend"),
        ("GET /similar", api_port, "similar"),
        ("floor app", floor_port, "recommend"),
    ]
    if cluster_url:  # its own home: spool and model cache apart from the single-node API's
        cluster_port = free_port()
        cluster_env = {
            **api_env,
            "ECHOTUNE_HOME": str(folder / "cluster-api"),
            "ECHOTUNE_REDIS_URL": cluster_url,
            "ECHOTUNE_REDIS_CLUSTER": "true",
        }
        processes.append(start_api(cluster_port, cluster_env, folder / "api-cluster.log"))
        endpoints.append(("GET /recs (cluster)", cluster_port, "recommend"))

    wrk_env = {"WRK_USERS": str(folder / "users.txt"), "WRK_TRACKS": str(folder / "tracks.txt"), "WRK_KEY": KEY}
    runs = []
    for name, port, mode in endpoints:
        for connections in (8, 64):
            run_wrk(f"http://127.0.0.1:{port}", connections, 3, {**wrk_env, "WRK_MODE": mode})  # warm-up
            figures = run_wrk(f"http://127.0.0.1:{port}", connections, args.seconds, {**wrk_env, "WRK_MODE": mode})
            runs.append((name, connections, figures))
            print(f"  {name:22s} c={connections:<3d} {figures['rps']:8,.0f} req/s", flush=True)

    print(
        f"\n{args.seconds} s per run, wrk -t2, on this machine ({os.cpu_count()} cores shared by server and load generator)"
    )
    print(f"{'endpoint':22s} {'conns':>5s} {'req/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    for name, connections, f in runs:
        errors = f["status_errors"] + f["socket_errors"]
        print(
            f"{name:22s} {connections:5d} {f['rps']:9,.0f} {f['p50_us'] / 1000:8.2f} {f['p95_us'] / 1000:8.2f} {f['p99_us'] / 1000:8.2f} {errors:7d}"
        )
    by = {(n, c): f for n, c, f in runs}
    for connections in (8, 64):
        ratio = by[("GET /recommendations", connections)]["rps"] / by[("floor app", connections)]["rps"]
        print(f"GET /recommendations / floor at {connections} connections: {ratio:.2f}")
    if cluster_url:
        for connections in (8, 64):
            on_cluster, on_node = by[("GET /recs (cluster)", connections)], by[("GET /recommendations", connections)]
            print(
                f"cluster / one node at {connections} connections: req/s {on_cluster['rps'] / on_node['rps']:.2f}, "
                f"P99 {on_cluster['p99_us'] / on_node['p99_us']:.2f}"
            )
    eight, sixty_four = by[("GET /recommendations", 8)], by[("GET /recommendations", 64)]
    floor = by[("floor app", 8)]
    print(
        "targets: >= 0.9 x floor at 8 conns: {}; P99 <= 1.25 x floor's: {}; 64 conns zero errors: {}".format(
            eight["rps"] / floor["rps"] >= 0.9,
            eight["p99_us"] <= 1.25 * floor["p99_us"],
            sixty_four["status_errors"] + sixty_four["socket_errors"] == 0,
        )
    )
    recall, recall_genre = recall_against_exact(api_port, stack.users, stack.genres, args.recall_users)
    rss = rss_mib(api)
    print(
        f"recall@10 against exact=true: {recall:.3f} unfiltered, {recall_genre:.3f} with a genre filter "
        f"(search depth {ef_for(n_tracks)}, ECHOTUNE_ANN_EF unset); API RSS {rss:,.0f} MiB; "
        f"release {stack.release_seconds:.0f} s, index {stack.index_bytes / 2**20:,.0f} MiB",
        flush=True,
    )
    return {
        "c8": eight,
        "c64": sixty_four,
        "floor8": floor,
        "recall": recall,
        "recall_genre": recall_genre,
        "rss_mib": rss,
        "release_seconds": stack.release_seconds,
        "index_bytes": stack.index_bytes,
    }


if __name__ == "__main__":
    main()
