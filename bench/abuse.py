"""Hostile clients against the running API: what they cost everybody else.

Starts ``echotune serve`` (one process, the production configuration) on a 20,000-track catalog, then,
while a probe client asks for ordinary recommendations one after another, drives:

1. 300 requests each with 50 random 200-character genres (the length cap refuses them: 422);
2. 300 requests each with 50 random 64-character genres (accepted; they match nothing);
3. feedback whose context carries labels meant to break the metrics exporter, then a scrape.

Prints, per phase: statuses, the API's RSS before and after, and the probe's P50/P99. Targets (issue
"trust under faults and hostile input"): RSS grows by under 50 MB, the probe's P99 stays under 100 ms,
and /metrics answers 200 after the label injection.

    .venv/bin/python bench/abuse.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from serving_support.processes import free_port, scratch_redis, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-client-key-0123456789abcdef"


def build(redis_url: str, prefix: str) -> tuple[list[str], list[str]]:
    import redis

    from core import release
    from core.contracts.redis_keys import RedisKeys
    from core.synthetic import SyntheticWorld
    from core.vectorstore import VectorStore
    from models import DEFAULT_ALGORITHM, create
    from models.training import build_inputs
    from models.weighting import graded_interactions

    world = SyntheticWorld.generate(20_000, 5_000, seed=3)
    events = world.events(150_000, days=30)
    graded = graded_interactions(events, world.tracks.set_index("track_id")["duration_ms"])
    matrix, features = build_inputs(graded, world.tracks)
    model = create(DEFAULT_ALGORITHM).fit(matrix, features)
    store = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(prefix))
    release.publish(store, "1", model, world.tracks, int(events["timestamp"].max().timestamp() * 1000), alias="champion")
    release.publish_played(store, graded)
    return list(model.user_ids), list(model.item_ids)


def call(url: str, body: bytes | None = None) -> tuple[int, float]:
    request = urllib.request.Request(url, data=body, headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    return status, (time.perf_counter() - started) * 1000


class Probe:
    """Ordinary recommendation requests, one after another, timing each."""

    def __init__(self, base: str, users: list[str]) -> None:
        self.base, self.users = base, users
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, ms = call(f"{self.base}/recommendations/{random.choice(self.users)}?count=20")
            self.latencies.append(ms)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def percentiles(self) -> tuple[float, float]:
        ordered = sorted(self.latencies)
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def rss_mb(process: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def genres(length: int) -> list[tuple[str, str]]:
    return [("genres", "".join(random.choices(string.ascii_letters, k=length))) for _ in range(50)]


def phase(name: str, base: str, users: list[str], api: psutil.Process, requests: list) -> dict:
    before = rss_mb(api)
    statuses: dict[int, int] = {}
    with Probe(base, users) as probe, ThreadPoolExecutor(4) as pool:
        for status, _ in pool.map(lambda r: call(*r), requests):
            statuses[status] = statuses.get(status, 0) + 1
    after = rss_mb(api)
    p50, p99 = probe.percentiles()
    return {"phase": name, "statuses": statuses, "rss_before_mb": before, "rss_after_mb": after, "probe_n": len(probe.latencies),
            "probe_p50_ms": p50, "probe_p99_ms": p99, "probe_statuses": probe.statuses}  # fmt: skip


def main() -> None:
    random.seed(1)
    with scratch_redis("abuse") as (folder, redis_url):
        users, _ = build(redis_url, "bench")
        port = free_port()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "ECHOTUNE_HOME": str(folder), "ECHOTUNE_REDIS_URL": redis_url,
               "ECHOTUNE_REDIS_PREFIX": "bench", "ECHOTUNE_API_KEYS": f"{KEY}:client", "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
               "ECHOTUNE_ACCESS_LOG": "false"}  # fmt: skip
        process = subprocess.Popen([sys.executable, "-m", "echotune.cli", "serve", "--port", str(port), "--workers", "1"], env=env, cwd=ROOT,
                                   stdout=(folder / "api.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/health/ready")
            api = psutil.Process(process.pid)
            for _ in range(200):  # warm up: first requests allocate what every later one reuses
                call(f"{base}/recommendations/{random.choice(users)}?count=20")
            user = users[0]
            long_genres = [(f"{base}/recommendations/{user}?" + urllib.parse.urlencode(genres(200)),) for _ in range(300)]
            capped_genres = [(f"{base}/recommendations/{user}?" + urllib.parse.urlencode(genres(64)),) for _ in range(300)]
            label = json.dumps([{"user_id": "u1", "track_id": "4uLU6hMCjMI75M1A2tKUQC", "type": "recommendation_clicked",
                                 "context": {"algorithm": bad, "variant": "v"}} for bad in ("a|b", 'x"}', "c\nd")]).encode()  # fmt: skip
            results = [
                phase("50 genres of 200 chars x 300", base, users, api, long_genres),
                phase("50 genres of 64 chars x 300", base, users, api, capped_genres),
                phase("label injection x 100", base, users, api, [(f"{base}/feedback", label)] * 100),
            ]
            metrics_status, _ = call(f"{base}/metrics")
        finally:
            stop(process)
    print(f"\n{'phase':32s} {'statuses':24s} {'RSS before':>11s} {'after':>8s} {'growth':>8s} {'probe n':>8s} {'P50 ms':>7s} {'P99 ms':>7s}")
    for r in results:
        growth = r["rss_after_mb"] - r["rss_before_mb"]
        print(f"{r['phase']:32s} {json.dumps(r['statuses']):24s} {r['rss_before_mb']:9.1f}MB {r['rss_after_mb']:6.1f}MB {growth:+7.1f}MB"
              f" {r['probe_n']:8d} {r['probe_p50_ms']:7.1f} {r['probe_p99_ms']:7.1f}")  # fmt: skip
    total = results[-1]["rss_after_mb"] - results[0]["rss_before_mb"]
    worst = max(r["probe_p99_ms"] for r in results)
    print(f"\n/metrics after the label injection: {metrics_status}")
    print(f"targets: RSS growth {total:+.1f} MB < 50 MB: {total < 50}; probe P99 {worst:.1f} ms < 100 ms: {worst < 100}; "
          f"/metrics 200: {metrics_status == 200}")  # fmt: skip


if __name__ == "__main__":
    main()
