"""A shift in taste, followed online and kept by the next version: the scenario of issue 21.

Runs ``echotune pipeline`` in a scratch home on the synthetic world of ``bench/loop.py`` (5,000 tracks,
1,000 listeners, 100,000 events over 30 days, its own embedded Redis), then starts ``echotune serve``
and ``echotune worker`` and, through the API:

1. stops the experiment the synthetic source registers (the demo's; its popularity arm does not
   learn), so every listener below is served by the model;
2. picks the 100 listeners with the closest to 100 earlier events and the genre that fills the smallest
   share of their history, and measures that genre's share of their top-10 (``GET /recommendations``);
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

    .venv/bin/python bench/taste_shift.py [--half-life DAYS] [--genre NAME] [--seed N] [--promote-anyway]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from loop import KEY, call, genre_share
from serving_support.processes import free_port, scratch_redis, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
LISTENERS, HISTORY, TRACKS_EACH = 100, 100, 15


class Stack:
    """The API and one worker of a scratch home (the pipeline already run there)."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.base = env, f"http://127.0.0.1:{port}"
        self.processes: list[subprocess.Popen] = []

    def start(self, home: Path) -> None:
        for role in (["serve"], ["worker", "--metrics-port", "0"]):
            log = (home / f"{role[0]}.log").open("wb")
            self.processes.append(subprocess.Popen([sys.executable, "-m", "echotune.cli", *role], env=self.env, cwd=home, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        wait_ready(f"{self.base}/health/ready")

    def top(self, user: str, k: int = 10) -> dict:
        return call(f"{self.base}/recommendations/{user}?count={k}")

    def admin(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.base}{path}", data=b"", method="POST", headers={"X-API-Key": ADMIN_KEY})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        for process in self.processes:
            stop(process)


def scenario(tables: Path, rng: np.random.Generator, genre: str | None = None) -> tuple[list[str], str, dict[str, list[str]]]:
    """The listeners (about ``HISTORY`` earlier events each), the genre filling the smallest share of
    their history (among genres with tracks enough to fill their lists after they heard some), and the
    ``TRACKS_EACH`` tracks of it each one takes to. ``genre``: that genre instead."""
    tracks, events = pd.read_parquet(tables / "tracks.parquet"), pd.read_parquet(tables / "events")
    genre_of = tracks.set_index("track_id")["genres"].map(lambda g: g[0])
    heard = events[events["type"] != "recommendation_shown"]
    sizes = heard.groupby("user_id").size()
    listeners = list((sizes - HISTORY).abs().sort_values(kind="stable").index[:LISTENERS])
    shares = heard[heard["user_id"].isin(listeners)]["track_id"].map(genre_of).value_counts(normalize=True)
    big = genre_of.value_counts().loc[lambda n: n >= 4 * TRACKS_EACH].index
    genre = genre or shares.reindex(sorted(big), fill_value=0.0).idxmin()
    pool = genre_of.index[genre_of == genre].to_numpy()
    return listeners, genre, {u: list(rng.choice(pool, TRACKS_EACH, replace=False)) for u in listeners}


def wait_applied(stream, accepted: int, timeout: float = 120) -> float:
    """Seconds until the worker applied ``accepted`` events."""
    started = time.monotonic()
    while stream.counters().get("applied", 0) < accepted:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the worker applied {stream.counters()} of {accepted} events in {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


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
        assert defs.resolve_job_def(drain_job.name).execute_in_process(instance=instance, partition_key=day.isoformat(), run_config=quiet).success
    result = defs.resolve_job_def(retrain_job.name).execute_in_process(instance=instance, run_config=quiet)
    model = next(e.materialization.metadata for e in result.get_asset_materialization_events() if e.asset_key.path == ["recommender_model"])
    verdict = f"version {model['version'].value}: {model['promotion_reason'].value}"
    if promote_anyway and not model["promoted"].value:
        from core import release
        from core.model_registry import ModelRegistry
        from core.vectorstore import VectorStore

        s = settings
        registry = ModelRegistry.open(s.mlflow_tracking_uri, s.mlflow_artifact_location, s.mlflow_experiment, s.registered_model)
        release.rollback(registry, VectorStore(redis_client(s.redis_url), RedisKeys(s.redis_prefix)), to_version=str(model["version"].value))
        verdict += "; made champion by hand (--promote-anyway)"
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half-life", type=float, default=None, help="ECHOTUNE_RECENCY_HALF_LIFE_DAYS (default: the setting's default)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the tracks each listener takes to")
    parser.add_argument("--genre", default=None, help="the genre they take to (default: the one least in their history)")
    parser.add_argument("--promote-anyway", action="store_true", help="make the retrained version champion even when the gate rejects it")
    args = parser.parse_args()
    with scratch_redis("taste") as (home, redis_url):
        port = free_port()
        env = {**os.environ, "ECHOTUNE_HOME": str(home), "ECHOTUNE_REDIS_URL": redis_url, "ECHOTUNE_API_PORT": str(port),
               "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN_KEY}:admin", "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000", "ECHOTUNE_ACCESS_LOG": "false",
               "ECHOTUNE_AUTOMATION": "false", "ECHOTUNE_WORKER_METRICS_PORT": "0", "ECHOTUNE_SYNTH_TRACKS": "5000", "ECHOTUNE_SYNTH_USERS": "1000",
               "ECHOTUNE_SYNTH_EVENTS": "100000", "ECHOTUNE_SYNTH_DAYS": "30"}  # fmt: skip
        if args.half_life is not None:
            env["ECHOTUNE_RECENCY_HALF_LIFE_DAYS"] = str(args.half_life)
        os.environ.update({k: v for k, v in env.items() if k.startswith("ECHOTUNE_")})  # this process retrains with the same settings
        from core.contracts.redis_keys import RedisKeys
        from core.feedback_stream import FeedbackStream
        from core.redis_clients import redis_client
        from core.settings import Settings

        settings = Settings()
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "echotune.cli", "pipeline"], env=env, cwd=home, check=True, capture_output=True)
        print(f"pipeline in {time.monotonic() - started:.0f} s; recency half-life {settings.recency_half_life_days:g} days", flush=True)
        stack = Stack(env, port)
        try:
            stack.start(home)
            for experiment in call(f"{stack.base}/experiments"):
                if experiment["status"] == "running":
                    stack.admin(f"/experiments/{experiment['id']}/stop")
                    print(f"stopped experiment {experiment['id']}: its listeners are served by the model again")
            listeners, genre, chosen = scenario(settings.layout.tables, np.random.default_rng(args.seed), args.genre)
            while stack.top(listeners[0])["experiment"] is not None:  # the API reads experiments every 5 s
                time.sleep(0.5)
            before, versions = genre_share(stack, listeners, genre)
            print(f"{len(listeners)} listeners take to '{genre}'; its share of their top-10: {before:.1%} (version {', '.join(versions)})")

            stream = FeedbackStream(redis_client(redis_url), RedisKeys(settings.redis_prefix))
            events = [{"user_id": u, "track_id": t, "type": kind, "ms_played": 240_000 if kind == "track_completed" else None}
                      for u in listeners for t in chosen[u] for kind in ("like", "track_completed")]  # fmt: skip
            events = [{k: v for k, v in e.items() if v is not None} for e in events]
            for start in range(0, len(events), 500):
                call(f"{stack.base}/feedback", events[start : start + 500])
            waited = wait_applied(stream, stream.counters().get("accepted", 0))
            online, _ = genre_share(stack, listeners, genre)
            print(f"posted {len(events):,} events, all applied {waited:.1f} s later; share from online learning alone: {online:.1%}", flush=True)

            started = time.monotonic()
            verdict = retrain(settings, args.promote_anyway)
            deadline = time.monotonic() + 60
            while stack.top(listeners[0])["model_version"] in versions and time.monotonic() < deadline:
                time.sleep(0.5)
            after, served = genre_share(stack, listeners, genre)
            print(f"retrain in {time.monotonic() - started:.0f} s ({verdict}); share with version {', '.join(served)}: {after:.1%}")
            print(f"\ngoals: online >= 30%: {online >= 0.3} ({online:.1%}); new version >= 50%: {after >= 0.5} ({after:.1%})")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
