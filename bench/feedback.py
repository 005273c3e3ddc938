"""Feedback throughput, accepted -> vector-updated latency, and a worker killed mid-run.

Builds a stack (synthetic catalog and users, the default model published with its fold-in) on an
embedded Redis, starts ``echotune serve --workers 2``, then for each count of ``--workers`` (default 1
then 2 ``echotune worker`` processes in one consumer group):

1. **throughput**: wrk posts batches of 100 events for N seconds (8 connections); prints accepted
   events/s (distinct ids the API put in the stream) and the workers' applied events/s (all accepted
   events over posting plus catch-up time);
2. **latency**: posts 1,000 events/s (ten batches of 100 per second) for N seconds; prints P50/P95/P99
   of accepted -> user-vector-updated, as logged by the workers per event;

then a table of both counts and a ``RESULT applied_per_s=`` line (one worker's rate: compare it with
another checkout's run of this file, alternating, on a machine whose speed varies by the day), and

3. **kill test**: keeps posting at 1,000 events/s to one worker, SIGKILLs it halfway, starts a new one
   (it reclaims the dead one's pending entries), then prints accepted vs applied: they must match,
   and the per-user applied sets must hold exactly as many distinct events (nothing twice).

Targets (issue 15): >= 5,000 applied events/s (on a slow day >= 1.5x the previous worker, same run);
P95 accepted->applied <= 50 ms at 1,000/s.

    .venv/bin/python -m bench.feedback [--seconds 20] [--workers 1,2]
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import time
import urllib.request
from contextlib import ExitStack

import numpy as np

from bench.harness import (
    KEY,
    SUPPORT,
    free_port,
    kill,
    publish_synthetic,
    require_wrk,
    scratch_redis,
    start,
    start_api,
    stop,
)

TYPES = ("play", "track_completed", "track_skipped", "like", "recommendation_shown")


class Paced:
    """Posts batches of 100 events at ``rate`` events/s from a thread until stopped."""

    def __init__(self, url: str, users: list[str], tracks: list[str], rate: int, tag: str) -> None:
        self.url, self.users, self.tracks, self.rate, self.tag = url, users, tracks, rate, tag
        self.sent, self.failed = 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(self.tag)
        interval = 100 / self.rate
        next_at = time.monotonic()
        n = 0
        while not self.stop.is_set():
            batch = [
                {
                    "event_id": f"{self.tag}-{n + i}",
                    "user_id": rng.choice(self.users),
                    "track_id": rng.choice(self.tracks),
                    "type": rng.choice(TYPES),
                    "ms_played": 120_000,
                }
                for i in range(100)
            ]
            n += 100
            request = urllib.request.Request(
                self.url,
                data=json.dumps(batch).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "X-API-Key": KEY},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.sent += 100 if response.status == 202 else 0
            except OSError:
                self.failed += 100
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Paced:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="worker process counts to measure throughput and latency with, in turn (default 1,2)",
    )
    args = parser.parse_args()
    require_wrk()

    import redis

    from core.contracts import RedisKeys

    cleanup = ExitStack()  # the scratch folder and its Redis, closed after the processes stop
    folder, redis_url = cleanup.enter_context(scratch_redis("feedback"))
    prefix = "bench"
    keys = RedisKeys(prefix)
    r = redis.Redis.from_url(redis_url)
    processes: dict[str, subprocess.Popen] = {}

    settings = {
        "ECHOTUNE_HOME": str(folder),
        "ECHOTUNE_REDIS_URL": redis_url,
        "ECHOTUNE_REDIS_PREFIX": prefix,
        "ECHOTUNE_API_KEYS": f"{KEY}:client",
        "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
        # feedback is limited by the events it carries (issue 23): one bench key posts every event
        "ECHOTUNE_RATE_LIMIT_FEEDBACK_EVENTS_PER_MINUTE": "1000000000",
    }

    def start_role(name: str, role: list[str]) -> None:
        processes[name] = start(role, settings, folder / f"{name}.log")

    def counters() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in r.hgetall(keys.feedback_counters()).items()}

    def wait_applied(target: int, timeout: float = 120) -> float:
        started = time.monotonic()
        while counters().get("applied", 0) < target and time.monotonic() - started < timeout:
            time.sleep(0.05)
        return time.monotonic() - started

    latency_log = folder / "latency.log"
    try:
        synthetic = publish_synthetic(redis_url, prefix, tracks=20_000, users=5_000, events=200_000, seed=5)
        users, tracks = synthetic.users, synthetic.tracks
        (folder / "users.txt").write_text("\n".join(users))
        (folder / "tracks.txt").write_text("\n".join(tracks))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        processes["api"] = start_api(port, settings, folder / "api.log")
        worker_cmd = ["worker", "--claim-idle-ms", "2000", "--latency-log", str(latency_log), "--metrics-port", "0"]
        env = {
            **os.environ,
            "WRK_USERS": str(folder / "users.txt"),
            "WRK_TRACKS": str(folder / "tracks.txt"),
            "WRK_KEY": KEY,
            "WRK_BATCH": "100",
        }
        summary = []
        for n_workers in args.workers:
            for i in range(n_workers):
                start_role(f"worker-{i + 1}", [*worker_cmd, "--consumer", f"worker-{i + 1}"])
            time.sleep(2)  # the workers are up
            print(f"--- {n_workers} worker process{'es' if n_workers > 1 else ''}")

            # 1. throughput
            before = counters()
            t0 = time.monotonic()
            done = subprocess.run(
                [
                    "wrk",
                    "-t2",
                    "-c8",
                    f"-d{args.seconds}s",
                    "--timeout",
                    "5s",
                    "-s",
                    str(SUPPORT / "feedback.lua"),
                    base,
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            posting_seconds = time.monotonic() - t0
            wrk = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("JSON "))[5:])
            accepted = counters().get("accepted", 0) - before.get("accepted", 0)
            applied_during = counters().get("applied", 0) - before.get("applied", 0)
            catch_up = wait_applied(before.get("applied", 0) + accepted, timeout=600)
            # requests wrk left in flight can still land: they are applied too before the latency run
            # starts, or they would count in its latencies with their wait behind this backlog
            time.sleep(1)
            wait_applied(
                counters().get("accepted", 0) - before.get("accepted", 0) + before.get("applied", 0), timeout=600
            )
            worker_rate = accepted / (posting_seconds + catch_up)
            print(
                f"throughput: {wrk['requests']:,} POSTs of 100 events in {posting_seconds:.1f}s, {wrk['status_errors'] + wrk['socket_errors']} errors"
            )
            print(
                f"  accepted events/s          {accepted / posting_seconds:10,.0f}   (distinct ids into the stream; target >= 5,000)"
            )
            print(
                f"  worker applied during post {applied_during / posting_seconds:10,.0f} events/s; all {accepted:,} applied "
                f"{catch_up:.1f}s after posting stopped -> {worker_rate:,.0f} events/s overall (target >= 5,000)"
            )
            # with the API idle the workers have the machine: their own speed, less at the mercy of the scheduler
            alone = (accepted - applied_during) / max(catch_up, 1e-9)
            print(f"  catching up alone          {alone:10,.0f} events/s (the API idle)")

            # 2. latency at 1,000 events/s
            latency_log.write_text("")
            before = counters()
            with Paced(f"{base}/feedback", users, tracks, 1000, f"lat{n_workers}") as paced:
                time.sleep(args.seconds)
            wait_applied(before.get("applied", 0) + paced.sent)
            latencies = np.loadtxt(latency_log) if latency_log.stat().st_size else np.zeros(1)
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            print(
                f"latency at 1,000 events/s for {args.seconds}s: {paced.sent:,} events posted ({paced.failed:,} more unanswered in 5 s or refused), {len(latencies):,} applied; "
                f"accepted->vector updated P50 {p50:.1f} ms, P95 {p95:.1f} ms, P99 {p99:.1f} ms (target P95 <= 50 ms)"
            )
            summary.append((n_workers, accepted / posting_seconds, worker_rate, alone, p50, p95, p99))
            for i in range(n_workers):
                stop(processes.pop(f"worker-{i + 1}"))

        print(
            f"\n{'workers':>7s} {'accepted/s':>11s} {'applied/s':>10s} {'alone/s':>8s} {'P50 ms':>7s} {'P95 ms':>7s} {'P99 ms':>7s}"
        )
        for n_workers, accepted_rate, worker_rate, alone, p50, p95, p99 in summary:
            print(
                f"{n_workers:7d} {accepted_rate:11,.0f} {worker_rate:10,.0f} {alone:8,.0f} {p50:7.1f} {p95:7.1f} {p99:7.1f}"
            )
        print(
            f"RESULT applied_per_s={summary[0][2]:.0f} alone_per_s={summary[0][3]:.0f}"
        )  # one worker's rate, for a same-run baseline comparison

        # 3. kill the worker mid-run
        before = counters()
        start_role("worker", [*worker_cmd, "--consumer", "worker-k1"])
        with Paced(f"{base}/feedback", users, tracks, 1000, "kill") as paced:
            time.sleep(args.seconds / 2)
            wait_applied(before["applied"] + 1, timeout=60)  # a worker still starting up has nothing to lose
            kill(processes["worker"])
            killed_at = counters()
            time.sleep(1)
            start_role("worker", [*worker_cmd, "--consumer", "worker-k2"])
            time.sleep(args.seconds / 2)
        accepted_now = counters()["accepted"] - before["accepted"]
        wait_applied(before["applied"] + accepted_now, timeout=120)
        time.sleep(1)  # anything left would now be counted twice
        after = counters()
        accepted, applied = after["accepted"] - before["accepted"], after["applied"] - before["applied"]
        distinct = sum(r.zcard(k) for k in r.scan_iter(match=keys.user_applied_events("*"), count=1000))
        print(
            f"kill test: worker SIGKILLed after {killed_at['applied'] - before['applied']:,} applied, restarted as worker-k2"
        )
        print(f"  accepted {accepted:,}   applied {applied:,}   -> {'MATCH' if accepted == applied else 'MISMATCH'}")
        print(
            f"  all runs: accepted {after['accepted']:,}, applied {after['applied']:,}, distinct event ids in users' applied sets "
            f"{distinct:,}, stream entries {r.xlen(keys.feedback_stream()):,} -> {'no duplicates' if distinct == after['applied'] == r.xlen(keys.feedback_stream()) else 'DUPLICATES'}"
        )
        print(f"  posting errors during the kill run: {paced.failed}")
    finally:
        for process in processes.values():
            stop(process)
        cleanup.close()


if __name__ == "__main__":
    main()
