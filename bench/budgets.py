"""Every latency budget of the ADR, measured: P50/P95/P99 next to its budget.

Builds the stack of ``bench/serving.py`` (50,000 synthetic tracks, the default algorithm published with
users' played sets) on an embedded Redis, registers a running A/B experiment, starts
``echotune serve --workers 2`` and ``echotune worker``, keeps 1,000 feedback events/s flowing through
them (so Redis and the worker are busy as in production), then times, one request at a time:

- **feature lookup** (budget 50 ms): the user's vector and played set read from Redis by the API's own
  code (``AppState.user_state``, with the rate-limit count that rides along), for random users;
- **experiment assignment** (10 ms): ``ExperimentRouter.assign`` of random users, the hash per request;
- **feedback acceptance** (100 ms, the ADR's "feedback processing"): ``POST /feedback`` of one event
  until its 202; what happens after (accepted -> applied by the worker) is in ``bench/feedback.py``;
- **recommendation end to end** (200 ms): ``GET /recommendations/{user}`` until its 200, on a kept-alive
  connection.

    .venv/bin/python -m bench.budgets [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import subprocess
import time

import numpy as np

from bench.feedback import Paced
from bench.harness import KEY, free_port, scratch_redis, start, start_api, stop
from bench.serving import api_settings, build_stack

ANN_MIN_TRACKS = 100_000  # bench.serving's default: 50,000 tracks are served exact, no ANN index
BUDGETS_MS = {
    "feature lookup": 50.0,
    "experiment assignment": 10.0,
    "feedback acceptance": 100.0,
    "recommendation end to end": 200.0,
}


def register_experiment(redis_url: str, prefix: str) -> None:
    """A running A/B test on the recommendations surface (both arms serve the champion: what is timed is
    the assignment, not a second model)."""
    import redis

    from core.contracts import RedisKeys
    from experiments.definition import Experiment
    from experiments.store import ExperimentStore

    experiment = Experiment(
        id="budgets",
        name="budgets",
        status="running",
        variants=[
            {"name": "control", "model_alias": "champion", "weight": 0.5},
            {"name": "treatment", "model_alias": "champion", "weight": 0.5},
        ],
    )
    ExperimentStore(redis.Redis.from_url(redis_url), RedisKeys(prefix)).put(experiment)


async def in_process(users: list[str], n: int) -> dict[str, np.ndarray]:
    """Feature lookup and assignment with the API's own objects (milliseconds per call)."""
    from echotune.config import load_settings
    from serving.rate_limit import Charge
    from serving.state import AppState

    state = await AppState.open(load_settings())
    try:
        key = state.api_keys.identify(KEY)
        version = state.models.get("champion").version
        lookups = []
        for user in random.Random(1).choices(users, k=n):
            started = time.perf_counter()
            vectors, played = await state.user_state([version], user, Charge(key, "recommendations"))
            lookups.append((time.perf_counter() - started) * 1000)
            assert vectors[0] is not None, f"user {user} has no vector of version {version}"
        assignments = []
        for user in random.Random(2).choices(users, k=n * 10):
            started = time.perf_counter()
            assigned = state.experiments.assign(user)
            assignments.append((time.perf_counter() - started) * 1000)
            assert assigned is not None, "the running experiment takes every user"
        return {"feature lookup": np.array(lookups), "experiment assignment": np.array(assignments)}
    finally:
        await state.close()


def over_http(port: int, users: list[str], tracks: list[str], n: int) -> dict[str, np.ndarray]:
    """Feedback acceptance and recommendations, one request at a time on a kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    rng = random.Random(3)
    timings: dict[str, list[float]] = {"feedback acceptance": [], "recommendation end to end": []}
    for i in range(n):
        event = {
            "event_id": f"budget-{i}",
            "user_id": rng.choice(users),
            "track_id": rng.choice(tracks),
            "type": "track_completed",
            "ms_played": 200_000,
        }
        for name, method, path, body, status in (
            ("feedback acceptance", "POST", "/feedback", json.dumps([event]), 202),
            ("recommendation end to end", "GET", f"/recommendations/{rng.choice(users)}?count=20", None, 200),
        ):
            headers = {"X-API-Key": KEY, **({"Content-Type": "application/json"} if body else {})}
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            timings[name].append((time.perf_counter() - started) * 1000)
            if response.status != status:
                raise RuntimeError(f"{method} {path} answered {response.status}, not {status}")
    return {name: np.array(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--requests", type=int, default=2000, help="timed calls per budget (assignment: ten times as many)"
    )
    parser.add_argument("--events", type=int, default=400_000, help="training events of the synthetic world")
    args = parser.parse_args()
    prefix = "budgets"
    processes: list[subprocess.Popen] = []
    with scratch_redis("budgets") as (folder, redis_url):
        env = api_settings(folder, redis_url, prefix, ANN_MIN_TRACKS)
        os.environ.update(env)  # the in-process AppState reads the same settings as the API
        try:
            # bench.serving's world: 8 events a track
            stack = build_stack(folder, redis_url, prefix, n_tracks=args.events // 8, ann_min_tracks=ANN_MIN_TRACKS)
            users, tracks = stack.users, stack.tracks
            register_experiment(redis_url, prefix)
            port = free_port()
            processes.append(start(["worker", "--metrics-port", "0"], env, folder / "worker.log"))
            processes.append(start_api(port, env, folder / "api.log"))
            with Paced(f"http://127.0.0.1:{port}/feedback", users, tracks, 1000, "budgets") as paced:
                over_http(port, users, tracks, 50)  # warm-up: connections, the model cache
                timings = over_http(port, users, tracks, args.requests)
                timings.update(asyncio.run(in_process(users, args.requests)))
            print(
                f"\n{args.requests:,} calls each (assignment {10 * args.requests:,}), one at a time, while {paced.sent:,} feedback events "
                f"were posted at 1,000/s ({paced.failed} failed) to the API and its worker; {len(tracks):,} tracks, {os.cpu_count()} cores"
            )
            print(f"{'budget':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'budget P95':>11s}  within")
            for name, budget in BUDGETS_MS.items():
                p50, p95, p99 = np.percentile(timings[name], [50, 95, 99])
                print(
                    f"{name:28s} {p50:8.3f} {p95:8.3f} {p99:8.3f} {budget:8.0f} ms  {'yes' if p95 <= budget else 'NO'}"
                )
        finally:
            for process in processes:
                stop(process)


if __name__ == "__main__":
    main()
