"""The loop, end to end: does the platform learn from a shift in listening with no manual step?

Starts ``echotune demo`` (the API, the worker, the Dagster UI with its daemon, MLflow) in a scratch
folder on a smaller synthetic world (``--tracks/--users/--events``: 5,000 / 1,000 / 100,000 over 30 days),
then shifts some listeners' taste through ``POST /feedback`` and waits, touching nothing, for the
first response carrying a new ``model_version``. ``--trigger`` says what should launch the retrain:

``volume`` (default; issue "The platform runs itself"): drain every 20 s, retrain after 2,000 new events.

1. picks 100 listeners and a genre none of them has played, and measures the genre's share of their
   top-10 (the served model's own ranking, out of any experiment);
2. injects drift: each listener skips what they are offered and plays, completes and likes tracks of
   that genre (30 or as many as their history);
3. prints the time from the first injected event to a new version, every automatic run, and the share;
4. keeps posting ordinary listening, 2,100 events a cycle, and prints Redis's memory after 2 and
   after ``--cycles`` retrain cycles (state must stay bounded: the goal is within 1.2x).

Goals: under 10 minutes to a new version, the share from about 0 to >= 50%, memory within 1.2x.

``drift`` (issue 21's first two done-when bullets): ECHOTUNE_RETRAIN_AFTER_EVENTS out of reach (10**9),
the drain on its default interval (``--drain-every`` to change it), the issue's scenario
(``serving_support/shift.py``, as ``bench/taste_shift.py`` runs it), no memory cycles.

1. stops the demo's experiment (its popularity arm does not learn): every listener is served by the model;
2. the 100 listeners with about 100 earlier events each and the genre they played least: its share of
   their top-10 before; each likes and completes 15 tracks of it (3,000 events); once the worker has
   applied every one, and before a new version is served, the share from online learning alone;
3. the drain sensor stores the events, the drift monitor runs after the drain, the retrain sensor
   reads its failed check: prints the seconds from the first injected event to the first response with
   a new version, every automatic run since (seconds after the injection, job, trigger, status, reason),
   the drift monitor's verdicts and the gate's verdict on each retrained version. A version the gate
   rejects is never served: the bench stops there and says so (it never promotes by hand);
4. once the worker has carried the listeners' online state into the new version, the share with it.

Goals (issue 21): a new version through the drift monitor within 15 minutes with trigger ``drift`` in its
run's tags; the genre >= 30% of their top-10 from online learning alone, >= 50% with the new version.

    .venv/bin/python -m bench.loop [--trigger volume|drift] [--cycles 10] [--drain-every S] [--tracks N --users N --events N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness import ROOT, free_port, start, stop, wait_ready
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

GENRE_USERS, EVENTS_PER_USER = 100, 30
FIFTEEN_MINUTES = 900


class Platform:
    """``echotune demo`` in a scratch home (its ECHOTUNE_* settings: ``settings``), and what the bench reads from it."""

    def __init__(self, home: Path, settings: dict[str, str], algorithm: str | None) -> None:
        self.home, self.algorithm = home, algorithm
        shutil.copy(ROOT / "workspace.yaml", home / "workspace.yaml")
        self.port = free_port()
        self.env: dict[str, str | None] = {
            "ECHOTUNE_HOME": str(home),
            "ECHOTUNE_API_PORT": str(self.port),
            "ECHOTUNE_DAGSTER_PORT": str(free_port()),
            "ECHOTUNE_MLFLOW_PORT": str(free_port()),
            "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN_KEY}:admin",
            "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000",
            "ECHOTUNE_ACCESS_LOG": "false",
            **settings,
            "ECHOTUNE_REDIS_URL": None,  # the demo's embedded Redis, not one this shell may name
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start(["demo"], self.env, self.home / "demo.log", cwd=self.home)
        wait_ready(f"{self.base}/health/ready", timeout=900)

    def redis(self):
        import redis

        return redis.Redis.from_url((self.home / "var" / "redis" / "redis.url").read_text().strip())

    def top(self, user: str, k: int = 10) -> dict:
        override = (
            f"&algorithm={self.algorithm}" if self.algorithm else ""
        )  # an algorithm takes the request out of experiments
        return call(f"{self.base}/recommendations/{user}?count={k}{override}")

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home / "dagster_home"))

    def automatic_runs(self, since: float) -> list[tuple[float, str, str, str, str, str]]:
        """(seconds after ``since``, job, trigger, status, reason, run id) of the runs created since ``since`` (epoch seconds), oldest first."""
        import dagster as dg

        with self.instance() as instance:
            records = instance.get_run_records(
                filters=dg.RunsFilter(created_after=datetime.fromtimestamp(since, tz=UTC))
            )
            return [
                (
                    r.create_timestamp.timestamp() - since,
                    r.dagster_run.job_name,
                    r.dagster_run.tags.get("echotune/trigger", r.dagster_run.tags.get("dagster/sensor_name", "-")),
                    r.dagster_run.status.value,
                    r.dagster_run.tags.get("echotune/reason", "-"),
                    r.dagster_run.run_id,
                )
                for r in reversed(records)
            ]

    def materializations(self, asset: str, since: float) -> list[tuple[float, str, dict]]:
        """(seconds after ``since``, run id, metadata as plain values) of ``asset``'s materializations since ``since``, oldest first."""
        import dagster as dg

        with self.instance() as instance:
            found = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_timestamp=since), limit=100, ascending=True
            )
            return [
                (r.timestamp - since, r.run_id, {k: v.value for k, v in r.asset_materialization.metadata.items()})
                for r in found.records
            ]

    def carried_into(self, version: str, timeout: float = 60) -> bool:
        """Whether the worker logged, within ``timeout`` s, that it carried users' online state into ``version``."""
        log, deadline = self.home / "var" / "logs" / "worker.log", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f'online events into model version {version}"' in log.read_text(
                errors="replace"
            ):  # the JSON message ends there
                return True
            time.sleep(1)
        return False

    def versions(self) -> list[str]:
        from core.contracts.redis_keys import RedisKeys

        return [v.decode() for v in self.redis().zrange(RedisKeys().models_index(), 0, -1)]

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def print_runs(platform: Platform, since: float) -> list[tuple]:
    runs = platform.automatic_runs(since)
    print("\nautomatic runs since the first injected event (s after it, job, trigger, status, reason):")
    for after, job, trigger, status, reason, _ in runs:
        print(f"  {after:+6.0f}s {job:20s} {trigger:15s} {status:8s} {reason}")
    return runs


def drift_mode(platform: Platform, args: argparse.Namespace) -> None:
    from core.contracts.redis_keys import RedisKeys
    from core.feedback_stream import FeedbackStream
    from core.settings import Settings

    listeners, genre, chosen = scenario(platform.home / "data" / "tables", np.random.default_rng(args.seed))
    for experiment in serve_the_model(platform, platform.base, listeners[0]):
        print(f"stopped experiment {experiment}: every listener is served by the model", flush=True)
    before, versions = genre_share(platform, listeners, genre)
    print(
        f"{len(listeners)} listeners take to '{genre}'; its share of their top-10: {before:.1%} (version {', '.join(versions)})",
        flush=True,
    )

    stream = FeedbackStream(platform.redis(), RedisKeys())
    events = shift_events(chosen)
    injected = time.time()
    post(platform.base, events)
    waited = wait_applied(stream, stream.counters().get("accepted", 0))
    online, served = genre_share(platform, listeners, genre)
    same = (
        ""
        if served == versions
        else f" (NOT online learning alone: version {', '.join(served - versions)} served already)"
    )
    print(
        f"posted {len(events):,} events, all applied {waited:.1f} s later; share from online learning alone: {online:.1%}{same}",
        flush=True,
    )

    drain = (
        platform.env.get("ECHOTUNE_DRAIN_EVERY_SECONDS")
        or f"{Settings.model_fields['drain_every_seconds'].default} (the default)"
    )
    print(f"waiting for a new model version (drain every {drain} s; no manual step)...", flush=True)
    new_version, rejected = None, []
    while time.time() < injected + args.wait:
        if (version := platform.top(listeners[0])["model_version"]) not in versions:
            new_version = version
            break
        if rejected := [m for _, _, m in platform.materializations("recommender_model", injected) if not m["promoted"]]:
            break  # never served; this mode never promotes by hand
        time.sleep(2)
    to_new = time.time() - injected
    after, served = None, set()
    if new_version:
        carried = platform.carried_into(new_version)
        after, served = genre_share(platform, listeners, genre)
        print(
            f"\nfirst response with a new model version ({new_version}) {to_new:.0f} s after the first injected event (goal <= {FIFTEEN_MINUTES} s)"
        )
        print(
            f"share with version {', '.join(served)}{'' if carried else ' (the worker logged no carry-over into it within 60 s)'}: {after:.1%}"
        )
    else:
        print(
            f"\nno new model version served {to_new:.0f} s after the first injected event"
            + (": the gate rejected it" if rejected else "")
        )

    runs = print_runs(platform, injected)
    print("\nthe drift monitor (feedback_drift) since:")
    for at, _, m in platform.materializations("feedback_drift", injected):
        print(
            f"  {at:+6.0f}s drift share {m['drift_share']:.2f} (threshold {m['drift_threshold']:.2f}) exceeded={m['drift_exceeded']}, "
            f"{m['live_events']:,} live vs {m['reference_events']:,} reference events, champion v{m['champion_version']}"
        )
    print("\nthe gate on each retrained version (recommender_model's metadata; MLflow version tag promotion_reason):")
    trigger_of = {run_id: trigger for _, _, trigger, _, _, run_id in runs}
    from_drift = False
    for at, run_id, m in platform.materializations("recommender_model", injected):
        trigger = trigger_of.get(run_id, "-")
        from_drift |= str(m["version"]) == new_version and trigger == "drift"
        print(
            f"  {at:+6.0f}s version {m['version']} ({trigger}): {'promoted' if m['promoted'] else 'REJECTED'}: {m['promotion_reason']}"
        )

    print("\ngoals (issue 21):")
    print(
        f"  new version through the drift monitor <= {FIFTEEN_MINUTES} s, trigger drift: {bool(new_version) and from_drift and to_new <= FIFTEEN_MINUTES}"
        f" ({f'{to_new:.0f} s' if new_version else 'none'}; trigger drift on its run: {from_drift})"
    )
    print(
        f"  share before {before:.1%}; online alone >= 30%: {online >= 0.3} ({online:.1%}); new version >= 50%: "
        f"{served == {new_version} and after >= 0.5} ({'none served' if after is None else f'{after:.1%}'})"
    )


def volume_mode(platform: Platform, args: argparse.Namespace) -> None:
    home = platform.home
    catalog = pd.read_parquet(home / "data" / "tables" / "tracks.parquet")
    graded = pd.read_parquet(home / "data" / "tables" / "interactions.parquet")
    first_genre = catalog.set_index("track_id")["genres"].map(lambda g: g[0] if g is not None and len(g) else None)
    heard = graded.assign(genre=graded["item_id"].map(first_genre))
    sizes = heard.groupby("user_id").size().sort_values()
    active = sizes.index[len(sizes) // 4 :]  # listeners with a typical history or more
    # the genre these listeners played least; then 100 of them who never played it
    by_genre = heard[heard["user_id"].isin(active)].groupby("genre")["user_id"].nunique()
    genre = (
        next(g for g in first_genre.dropna().unique() if g not in by_genre.index)
        if len(by_genre) < first_genre.nunique()
        else by_genre.idxmin()
    )
    played = heard.groupby("user_id")["genre"].agg(set)
    never = [u for u in sizes.index[len(sizes) // 4 : 3 * len(sizes) // 4] if genre not in played[u]][:GENRE_USERS]
    pool = list(first_genre[first_genre == genre].index)
    before, versions_before = genre_share(platform, never, genre)
    print(
        f"drift: {len(never)} listeners switch to '{genre}' ({len(pool)} tracks), which they never played; its share of their top-10 now {before:.1%}",
        flush=True,
    )

    # a switch: they skip what they are offered from their old taste and play, finish and like the new genre,
    # about as much as they listened before
    injected = time.time()
    events = []
    for user in never:
        offered = [t["track_id"] for t in platform.top(user)["tracks"]]
        events += [{"user_id": user, "track_id": t, "type": "track_skipped", "ms_played": 5_000} for t in offered]
        chosen = random.sample(pool, min(len(pool), max(EVENTS_PER_USER, int(sizes[user]))))
        events += [{"user_id": user, "track_id": t, "type": "track_completed", "ms_played": 240_000} for t in chosen]
        events += [{"user_id": user, "track_id": t, "type": "like"} for t in chosen[::3]]
    post(platform.base, events)
    print(
        f"posted {len(events):,} events in {time.time() - injected:.1f}s; waiting for a new model version...",
        flush=True,
    )
    time.sleep(5)
    online, _ = genre_share(platform, never, genre)
    print(f"share of '{genre}' after online learning alone (the worker, same model version): {online:.1%}", flush=True)
    new_version, deadline = None, injected + args.wait
    while time.time() < deadline:
        body = platform.top(never[0])
        if body["model_version"] not in versions_before:
            new_version = body["model_version"]
            break
        time.sleep(2)
    to_new = time.time() - injected
    after, _ = genre_share(platform, never, genre)
    print(
        f"\nfirst response with a new model version ({new_version}) {to_new:.0f}s after the first injected event"
        f"{'' if new_version else f' (none within {args.wait:.0f} s)'}"
    )
    print(f"share of '{genre}' in those listeners' top-10: before {before:.1%}, after {after:.1%}")
    print_runs(platform, injected)

    memory = {}
    r = platform.redis()
    cycle_users = list(sizes.index)
    tracks = list(catalog["track_id"])
    for cycle in range(2, args.cycles + 1):
        newest = max(map(int, platform.versions()))
        ordinary = [
            {
                "user_id": random.choice(cycle_users),
                "track_id": random.choice(tracks),
                "type": "play",
                "ms_played": 120_000,
            }
            for _ in range(2100)
        ]
        post(platform.base, ordinary)
        deadline = time.time() + 600
        while time.time() < deadline and max(map(int, platform.versions())) <= newest:
            time.sleep(3)
        latest = max(map(int, platform.versions()))
        time.sleep(5)  # the publishing run retires old sets after moving the alias
        memory[cycle] = r.info("memory")["used_memory"]
        print(
            f"retrain cycle {cycle}: newest version {latest}, vector sets in Redis {len(platform.versions())}, used_memory {memory[cycle] / 2**20:.1f} MB",
            flush=True,
        )
    if 2 in memory and args.cycles in memory:
        ratio = memory[args.cycles] / memory[2]
        print(
            f"\nRedis memory after 2 cycles {memory[2] / 2**20:.1f} MB, after {args.cycles} {memory[args.cycles] / 2**20:.1f} MB: {ratio:.2f}x"
        )
    print(
        f"\ngoals: new version < 600 s: {to_new < 600 and new_version is not None}; share {before:.0%} -> {after:.0%} (>= 50%): {after >= 0.5}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--trigger", choices=["volume", "drift"], default="volume", help="what should launch the retrain (see above)"
    )
    parser.add_argument("--cycles", type=int, default=10, help="volume: retrain cycles before the memory figure")
    parser.add_argument(
        "--drain-every",
        type=int,
        default=None,
        help="ECHOTUNE_DRAIN_EVERY_SECONDS (volume: 20; drift: the setting's default)",
    )
    parser.add_argument(
        "--wait", type=float, default=1800, help="seconds to wait for a new version after the first injected event"
    )
    parser.add_argument("--seed", type=int, default=7, help="drift: seed of the tracks each listener takes to")
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    random.seed(7)
    drift = args.trigger == "drift"
    settings = {
        "ECHOTUNE_SYNTH_TRACKS": str(args.tracks),
        "ECHOTUNE_SYNTH_USERS": str(args.users),
        "ECHOTUNE_SYNTH_EVENTS": str(args.events),
        "ECHOTUNE_SYNTH_DAYS": "30",
        "ECHOTUNE_RETRAIN_AFTER_EVENTS": str(10**9 if drift else 2000),
    }
    if args.drain_every or not drift:
        settings["ECHOTUNE_DRAIN_EVERY_SECONDS"] = str(args.drain_every or 20)
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"echotune-loop-{os.getpid()}"
    home.mkdir()
    platform = Platform(home, settings, algorithm=None if drift else "lowrank_ease")
    try:
        started = time.time()
        platform.start()
        print(
            f"platform up in {time.time() - started:.0f}s (demo in {home}; trigger {args.trigger}, {settings})",
            flush=True,
        )
        (drift_mode if drift else volume_mode)(platform, args)
    finally:
        platform.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
