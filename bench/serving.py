"""Recommendation API throughput and latency, next to a bare FastAPI floor app.

Builds a stack on a synthetic catalog of 50,000 tracks and 10,000 users (the default algorithm,
trained and published to an embedded Redis), starts ``echotune serve --workers 2`` (API keys, rate
limits, metrics, JSON access logs: the production configuration), then drives
``GET /recommendations/{user}`` (random users, count 20) and ``/similar`` with wrk for 20 s at 8 and at
64 connections. The same load goes to the floor app (a 50,000 x 64 dot product, top-20, JSON; 2 uvicorn
workers, one BLAS thread each). Prints requests/s, P50/P95/P99 and errors, and ours/floor.

Targets (issue 5): at 8 connections >= 1,500 requests/s, P99 <= 20 ms and >= 0.75 of the floor's
requests/s; at 64 connections zero errors and P99 <= 150 ms.

``--cluster`` also publishes the model to a local 3-master Redis Cluster, starts a second API on it
(ECHOTUNE_REDIS_CLUSTER=true) and drives ``GET /recommendations`` there the same way, printing its
requests/s and P99 as ratios to the single-node API measured in the same run (issue 16).

    .venv/bin/python bench/serving.py [--seconds 20] [--events 400000] [--cluster]
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from serving_support.processes import free_port, require_wrk, scratch_redis, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "serving_support"
KEY = "bench-client-key-0123456789abcdef"


def build_stack(folder: Path, redis_url: str, prefix: str, n_events: int, cluster_url: str | None = None) -> tuple[list[str], list[str]]:
    """Train the default algorithm on a 50k x 10k synthetic world and publish it (to the cluster at
    ``cluster_url`` too when given); returns user ids and track ids."""
    from core import release
    from core.contracts import RedisKeys
    from core.redis_clients import redis_client
    from core.synthetic import SyntheticWorld
    from core.vectorstore import VectorStore
    from models import DEFAULT_ALGORITHM, create
    from models.training import build_inputs
    from models.weighting import graded_interactions

    started = time.perf_counter()
    world = SyntheticWorld.generate(50_000, 10_000, seed=11)
    events = world.events(n_events, days=30)
    graded = graded_interactions(events, world.tracks.set_index("track_id")["duration_ms"])
    matrix, features = build_inputs(graded, world.tracks)
    model = create(DEFAULT_ALGORITHM).fit(matrix, features)
    trained_until = int(events["timestamp"].max().timestamp() * 1000)
    for url, cluster in ((redis_url, False), (cluster_url, True)) if cluster_url else ((redis_url, False),):
        store = VectorStore(redis_client(url, cluster), RedisKeys(prefix))
        release.publish(store, "1", model, world.tracks, trained_until, alias="champion")
        release.publish_played(store, graded)
    print(f"stack: {len(model.item_ids):,} tracks, {len(model.user_ids):,} users with vectors ({model.item_vectors().shape[1]}-d {model.name}), "
          f"{len(events):,} events, built in {time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
    return list(model.user_ids), list(model.item_ids)


def run_wrk(url: str, connections: int, seconds: int, env: dict) -> dict:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(SUPPORT / "wrk.lua"), url]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("JSON "))
    figures = json.loads(line[5:])
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--cluster", action="store_true", help="also serve from a local 3-master Redis Cluster and print the ratio to one node")
    args = parser.parse_args()
    require_wrk()
    processes: list[subprocess.Popen] = []
    with scratch_redis("serving") as (folder, redis_url):
        cluster = None
        try:
            if args.cluster:
                from core.redis_server import EmbeddedCluster

                cluster = EmbeddedCluster(folder / "cluster")
                cluster.start()
            _run(args, folder, redis_url, processes, cluster.url if cluster else None)
        finally:
            for process in processes:
                stop(process)
            if cluster is not None:
                cluster.stop()


def _run(args, folder: Path, redis_url: str, processes: list[subprocess.Popen], cluster_url: str | None = None) -> None:
    """Build the stack, start the API (and one on the cluster) and the floor app (appended to ``processes``), drive them, print."""
    prefix = "bench"
    users, tracks = build_stack(folder, redis_url, prefix, args.events, cluster_url)
    (folder / "users.txt").write_text("\n".join(users))
    (folder / "tracks.txt").write_text("\n".join(tracks))
    blas = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    api_port, floor_port = free_port(), free_port()
    api_env = {**blas, "ECHOTUNE_HOME": str(folder), "ECHOTUNE_REDIS_URL": redis_url, "ECHOTUNE_REDIS_PREFIX": prefix,
               "ECHOTUNE_API_KEYS": f"{KEY}:client", "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000"}  # fmt: skip
    api = start([sys.executable, "-m", "echotune.cli", "serve", "--port", str(api_port), "--workers", "2"], api_env, folder / "api.log")
    processes.append(api)
    wait_ready(f"http://127.0.0.1:{api_port}/health/ready")
    floor = start([sys.executable, "-m", "uvicorn", "bench.serving_support.floor_app:app", "--port", str(floor_port),
                   "--workers", "2", "--log-level", "warning", "--no-access-log"], blas, folder / "floor.log")  # fmt: skip
    processes.append(floor)
    wait_ready(f"http://127.0.0.1:{floor_port}/recommendations/warmup")
    endpoints = [("GET /recommendations", api_port, "recommend"), ("GET /similar", api_port, "similar"), ("floor app", floor_port, "recommend")]
    if cluster_url:  # its own home: spool and model cache apart from the single-node API's
        cluster_port = free_port()
        cluster_env = {**api_env, "ECHOTUNE_HOME": str(folder / "cluster-api"), "ECHOTUNE_REDIS_URL": cluster_url, "ECHOTUNE_REDIS_CLUSTER": "true"}
        processes.append(start([sys.executable, "-m", "echotune.cli", "serve", "--port", str(cluster_port), "--workers", "2"],
                               cluster_env, folder / "api-cluster.log"))  # fmt: skip
        wait_ready(f"http://127.0.0.1:{cluster_port}/health/ready")
        endpoints.append(("GET /recs (cluster)", cluster_port, "recommend"))

    wrk_env = {"WRK_USERS": str(folder / "users.txt"), "WRK_TRACKS": str(folder / "tracks.txt"), "WRK_KEY": KEY}
    runs = []
    for name, port, mode in endpoints:
        for connections in (8, 64):
            run_wrk(f"http://127.0.0.1:{port}", connections, 3, {**wrk_env, "WRK_MODE": mode})  # warm-up
            figures = run_wrk(f"http://127.0.0.1:{port}", connections, args.seconds, {**wrk_env, "WRK_MODE": mode})
            runs.append((name, connections, figures))
            print(f"  {name:22s} c={connections:<3d} {figures['rps']:8,.0f} req/s", flush=True)

    print(f"\n{args.seconds} s per run, wrk -t2, on this machine ({os.cpu_count()} cores shared by server and load generator)")
    print(f"{'endpoint':22s} {'conns':>5s} {'req/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    for name, connections, f in runs:
        errors = f["status_errors"] + f["socket_errors"]
        print(f"{name:22s} {connections:5d} {f['rps']:9,.0f} {f['p50_us'] / 1000:8.2f} {f['p95_us'] / 1000:8.2f} {f['p99_us'] / 1000:8.2f} {errors:7d}")
    by = {(n, c): f for n, c, f in runs}
    for connections in (8, 64):
        ratio = by[("GET /recommendations", connections)]["rps"] / by[("floor app", connections)]["rps"]
        print(f"GET /recommendations / floor at {connections} connections: {ratio:.2f}")
    if cluster_url:
        for connections in (8, 64):
            on_cluster, on_node = by[("GET /recs (cluster)", connections)], by[("GET /recommendations", connections)]
            print(f"cluster / one node at {connections} connections: req/s {on_cluster['rps'] / on_node['rps']:.2f}, "
                  f"P99 {on_cluster['p99_us'] / on_node['p99_us']:.2f}")
    eight, sixty_four = by[("GET /recommendations", 8)], by[("GET /recommendations", 64)]
    print("\ntargets: 8 conns >= 1,500 req/s: {}; P99 <= 20 ms: {}; >= 0.75 x floor: {}; 64 conns zero errors: {}; P99 <= 150 ms: {}".format(
        eight["rps"] >= 1500, eight["p99_us"] <= 20_000, eight["rps"] / by[("floor app", 8)]["rps"] >= 0.75,
        sixty_four["status_errors"] + sixty_four["socket_errors"] == 0, sixty_four["p99_us"] <= 150_000))  # fmt: skip


if __name__ == "__main__":
    main()
