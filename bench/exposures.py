"""Server-side exposures: lists served to users in an experiment, with no client posting anything, until
the worker has counted every shown track.

Builds the feedback benchmark's stack (synthetic catalog and users, the default model published) on an
embedded Redis, starts ``echotune serve --workers 2`` and ``echotune worker``, registers a running A/B
experiment (popularity against the champion), then serves ``--lists`` lists of ``--count`` tracks from
8 threads and polls ``/metrics`` until ``echotune_feedback_events_total{type="recommendation_shown"}``
holds lists x count. Prints the serving rate, the time from the last list served to the last exposure
counted, and the counts per variant against the lists each variant served.

Target (issue 14): 1,000 lists -> 1,000 x count exposures counted within 30 s.

    .venv/bin/python -m bench.exposures [--lists 1000] [--count 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from prometheus_client.parser import text_string_to_metric_families

from bench.harness import KEY, free_port, publish_synthetic, scratch_redis, start, start_api, stop

ADMIN = "bench-admin-key-0123456789abcdef"
EXPERIMENT = {
    "id": "bench-ab",
    "name": "exposure benchmark",
    "status": "running",
    "variants": [
        {"name": "control", "algorithm": "popularity", "weight": 0.5},
        {"name": "treatment", "model_alias": "champion", "weight": 0.5},
    ],
}


def call(url: str, key: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if body is None else "POST",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def shown_counted(base: str) -> Counter:
    """Shown tracks counted so far, per variant label."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    counted: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "echotune_feedback_events_total" and sample.labels.get("type") == "recommendation_shown":
                counted[sample.labels["variant"]] += int(sample.value)
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", type=int, default=1000)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()

    cleanup = ExitStack()
    folder, redis_url = cleanup.enter_context(scratch_redis("exposures"))
    processes: list[subprocess.Popen] = []
    settings = {
        "ECHOTUNE_HOME": str(folder),
        "ECHOTUNE_REDIS_URL": redis_url,
        "ECHOTUNE_REDIS_PREFIX": "bench",
        "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN}:admin",
        "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
    }
    try:
        users = publish_synthetic(
            redis_url, "bench", tracks=20_000, users=5_000, events=200_000, seed=5
        ).users  # the feedback bench's stack
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        processes.append(start(["worker"], settings, folder / "worker.log"))
        processes.append(start_api(port, settings, folder / "api.log"))
        call(f"{base}/experiments", ADMIN, EXPERIMENT)
        time.sleep(6)  # every API process re-reads the experiments within 5 s

        def serve(i: int) -> str | None:
            return call(f"{base}/recommendations/{users[i % len(users)]}?count={args.count}", KEY).get("variant")

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            variants = Counter(pool.map(serve, range(args.lists)))
        served_at = time.monotonic()
        target = args.lists * args.count
        counted = shown_counted(base)
        while sum(counted.values()) < target and time.monotonic() - served_at < 120:
            time.sleep(0.1)
            counted = shown_counted(base)
        done_at = time.monotonic()
        print(
            f"served {args.lists:,} lists of {args.count} to users of a running experiment in {served_at - started:.1f}s "
            f"({args.lists / (served_at - started):,.0f} lists/s, 8 threads); no client posted anything"
        )
        print(
            f"  recommendation_shown counted: {sum(counted.values()):,} of {target:,}, the last {done_at - served_at:.2f}s after the last "
            f"list was served (target: within 30 s)"
        )
        for variant, lists in sorted(variants.items(), key=str):
            print(
                f"  variant {variant}: {lists:,} lists served -> {counted.get(variant or 'none', 0):,} shown counted (expected {lists * args.count:,})"
            )
    finally:
        for process in processes:
            stop(process)
        cleanup.close()


if __name__ == "__main__":
    main()
