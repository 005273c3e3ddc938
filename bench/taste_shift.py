"""A shift in taste, followed online and kept by the next version: the scenario of issue 21.

Runs ``echotune pipeline`` in a scratch home on the synthetic world of ``bench/loop.py`` (5,000 tracks,
1,000 listeners, 100,000 events over 30 days, its own embedded Redis), then starts ``echotune serve``
and ``echotune worker`` and, through the API:

1. stops the experiment the synthetic source registers (the demo's; its popularity arm does not
   learn), so every listener below is served by the model;
2. picks the 100 listeners with the closest to 100 earlier events of their own (the demo experiment's
   simulated listening left out, as training leaves it out) and the genre that fills the smallest
   share of their history (``serving_support/shift.py``, shared with ``bench/loop.py --trigger drift``), and measures that genre's share of their top-10 (``GET /recommendations``);
3. each of them likes and completes 15 random tracks of the genre (3,000 events, ``POST /feedback``); once
   the worker has applied every one, measures the share again: online learning alone;
4. drains the feedback stream and runs the Dagster ``retrain`` job in this process (the drift monitor
   will launch it on its own); once the API serves the new version, measures the share a third time.

Prints the three shares and the gate's verdict. Goals (issue 21): >= 30% from online learning alone,
>= 50% with the new version. ``--half-life`` sets ``ECHOTUNE_RECENCY_HALF_LIFE_DAYS`` (default: the
setting's); ``--promote-anyway`` makes the new version champion by hand when the gate rejects it (to
measure the learning apart from the gate, which compares the two on the held-out pairs the champion
never trained on; ``bench/gate_split.py`` prints its figures offline); the pipeline takes about a
minute on 2 cores, the rest well under one.

    .venv/bin/python -m bench.taste_shift [--half-life DAYS] [--genre NAME] [--seed N] [--promote-anyway]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.harness import free_port, scratch_redis, start, start_api, stop
from bench.serving_support.shift import (
    ADMIN_KEY,
    KEY,
    call,
    genre_share,
    post,
    scenario,
    serve_the_model,
    shift_events,
    wait_applied,
)


class Stack:
    """The API and one worker of a scratch home (the pipeline already run there)."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port, self.base = env, port, f"http://127.0.0.1:{port}"
        self.processes: list[subprocess.Popen] = []

    def start(self, home: Path) -> None:
        self.processes.append(start(["worker", "--metrics-port", "0"], self.env, home / "worker.log", cwd=home))
        self.processes.append(start_api(self.port, self.env, home / "serve.log", workers=None, cwd=home))

    def top(self, user: str, k: int = 10) -> dict:
        return call(f"{self.base}/recommendations/{user}?count={k}")

    def stop(self) -> None:
        for process in self.processes:
            stop(process)


def retrain(settings, promote_anyway: bool) -> str:
    """The live feedback drained, then the ``retrain`` job, in the home's Dagster instance; returns the
    gate's verdict. ``promote_anyway``: a version the gate rejected is made champion by hand (MLflow and
    Redis, as ``echotune model rollback --to V`` does), to measure the learning apart from the gate."""
    import dagster as dg

    from core.contracts.redis_keys import RedisKeys
    from core.ingest.live_feedback import undrained_days
    from core.redis_clients import redis_client
    from pipelines.automation.jobs import drain_job, retrain_job
    from pipelines.definitions import build_defs
    from pipelines.instance import prepare_instance

    os.environ.update(prepare_instance(settings))
    defs, instance = build_defs(settings), dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for day in undrained_days(redis_client(settings.redis_url), RedisKeys(settings.redis_prefix)):
        assert (
            defs.resolve_job_def(drain_job.name)
            .execute_in_process(instance=instance, partition_key=day.isoformat(), run_config=quiet)
            .success
        )
    result = defs.resolve_job_def(retrain_job.name).execute_in_process(instance=instance, run_config=quiet)
    model = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["recommender_model"]
    )
    verdict = f"version {model['version'].value}: {model['promotion_reason'].value}"
    if promote_anyway and not model["promoted"].value:
        from core import release
        from core.model_registry import ModelRegistry
        from core.vectorstore import VectorStore

        s = settings
        registry = ModelRegistry.from_settings(s)
        release.rollback(
            registry,
            VectorStore(redis_client(s.redis_url), RedisKeys(s.redis_prefix)),
            to_version=str(model["version"].value),
        )
        verdict += "; made champion by hand (--promote-anyway)"
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--half-life", type=float, default=None, help="ECHOTUNE_RECENCY_HALF_LIFE_DAYS (default: the setting's default)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the tracks each listener takes to")
    parser.add_argument(
        "--genre", default=None, help="the genre they take to (default: the one least in their history)"
    )
    parser.add_argument(
        "--promote-anyway",
        action="store_true",
        help="make the retrained version champion even when the gate rejects it",
    )
    args = parser.parse_args()
    with scratch_redis("taste") as (home, redis_url):
        port = free_port()
        env = {
            "ECHOTUNE_HOME": str(home),
            "ECHOTUNE_REDIS_URL": redis_url,
            "ECHOTUNE_API_PORT": str(port),
            "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN_KEY}:admin",
            "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000",
            "ECHOTUNE_ACCESS_LOG": "false",
            "ECHOTUNE_AUTOMATION": "false",
            "ECHOTUNE_WORKER_METRICS_PORT": "0",
            "ECHOTUNE_SYNTH_TRACKS": "5000",
            "ECHOTUNE_SYNTH_USERS": "1000",
            "ECHOTUNE_SYNTH_EVENTS": "100000",
            "ECHOTUNE_SYNTH_DAYS": "30",
        }
        if args.half_life is not None:
            env["ECHOTUNE_RECENCY_HALF_LIFE_DAYS"] = str(args.half_life)
        os.environ.update(
            {k: v for k, v in env.items() if k.startswith("ECHOTUNE_")}
        )  # this process retrains with the same settings
        from core.contracts.redis_keys import RedisKeys
        from core.feedback_stream import FeedbackStream
        from core.redis_clients import redis_client
        from core.settings import Settings

        settings = Settings()
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "echotune.cli", "pipeline"],
            env={**os.environ, **env},
            cwd=home,
            check=True,
            capture_output=True,
        )
        print(
            f"pipeline in {time.monotonic() - started:.0f} s; recency half-life {settings.recency_half_life_days:g} days",
            flush=True,
        )
        stack = Stack(env, port)
        try:
            stack.start(home)
            listeners, genre, chosen = scenario(settings.layout.tables, np.random.default_rng(args.seed), args.genre)
            for experiment in serve_the_model(stack, stack.base, listeners[0]):
                print(f"stopped experiment {experiment}: its listeners are served by the model again")
            before, versions = genre_share(stack, listeners, genre)
            print(
                f"{len(listeners)} listeners take to '{genre}'; its share of their top-10: {before:.1%} (version {', '.join(versions)})"
            )

            stream = FeedbackStream(redis_client(redis_url), RedisKeys(settings.redis_prefix))
            events = shift_events(chosen)
            post(stack.base, events)
            waited = wait_applied(stream, stream.counters().get("accepted", 0))
            online, _ = genre_share(stack, listeners, genre)
            print(
                f"posted {len(events):,} events, all applied {waited:.1f} s later; share from online learning alone: {online:.1%}",
                flush=True,
            )

            started = time.monotonic()
            verdict = retrain(settings, args.promote_anyway)
            deadline = time.monotonic() + 60
            while stack.top(listeners[0])["model_version"] in versions and time.monotonic() < deadline:
                time.sleep(0.5)
            after, served = genre_share(stack, listeners, genre)
            print(
                f"retrain in {time.monotonic() - started:.0f} s ({verdict}); share with version {', '.join(served)}: {after:.1%}"
            )
            renewed = (
                not served & versions
            )  # a rejected version is not served: the old one's share is no figure of the new one
            print(
                f"\ngoals: online >= 30%: {online >= 0.3} ({online:.1%}); new version >= 50%: {renewed and after >= 0.5} "
                f"({f'{after:.1%}' if renewed else 'no new version served'})"
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
