"""Faults: the platform under the failures it promises to ride out, with figures.

Builds a small stack (synthetic catalog and users, the default model published with its fold-in) on
an embedded Redis this script can SIGKILL, starts ``echotune serve --workers 2`` and ``echotune
worker``, then runs five scenarios, each under load from client threads that count every answer:

a. **redis-kill**: Redis SIGKILLed and restarted under mixed load (recommendations, feedback, the
   worker learning);
b. **redis-flap**: Redis stopped and started every 2 s for 30 s while posting;
c. **spool-full**: Redis down and an API with a small spool (``ECHOTUNE_SPOOL_MAX_BYTES``) posted to
   until it answers 503, then Redis back;
d. **api-kill**: Redis down, the API SIGKILLed with posts in flight (their events in its spool), Redis
   back, the API restarted: every 202 must be applied;
e. **worker-kill**: the worker SIGKILLed mid-batch (entries read, not acknowledged), a new one started;
f. **erased-while-paused**: Redis paused (SIGSTOP); events of one user spooled by the API; the user
   erased through a second API (its own spool), whose DELETE answers 503 (the erasure is then in the
   offline log only); Redis resumed: after the spool replays and the worker catches up, no key may name
   the user;
g. **dead-letters-erased**: dead letters of two users; one of them erased while Redis is paused (503
   again); ``echotune feedback replay-dead-letters`` must replay the other's and delete the erased
   user's, and no key may name the erased user.

Per scenario, requests: attempted, succeeded (2xx), degraded (a spooled 202, a degraded list), 503 of a
full spool, other 5xx, no answer (connection refused or cut: the API was down); events: accepted (in a
202 answer) and applied (in their user's applied set once the worker caught up). Client threads, not
wrk, post here: each answer must be tied to the event ids it accepted.

Scenarios a and c also ask ``/health/ready`` while Redis is down: a pod with a model and room in its spool
stays in rotation (200 ``degraded``), one whose spool is full leaves it (503 ``not_ready``).

Done when every scenario a-e shows accepted == applied and 0 other 5xx, and f-g leave 0 keys naming
the erased user.

    .venv/bin/python -m bench.faults [--flap-seconds 30] [--scenarios abcdefg]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

from bench.harness import KEY, free_port, kill, killable_redis, publish_synthetic, start, start_api, stop

PREFIX = "bench"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
TYPES = ("play", "track_completed", "track_skipped", "like", "recommendation_shown")
COLUMNS = ("attempted", "ok", "degraded", "503 full", "other 5xx", "no answer")


class Load:
    """Client threads against one API: ``posters`` post batches of 10 events with ids of their own,
    ``readers`` ask for recommendations. Every answer is counted; the events of every 202 are kept."""

    def __init__(
        self, port: int, users: list[str], tracks: list[str], tag: str, posters: int = 3, readers: int = 0
    ) -> None:
        self.port, self.users, self.tracks, self.tag = port, users, tracks, tag
        self.tally: Counter = Counter()
        self.accepted: list[tuple[str, str]] = []  # (user, event id) of every event in a 202
        self.samples: list[str] = []  # the first unexpected answers, for the report
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(i,), daemon=True) for i in range(posters)]
        self._threads += [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(readers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _post(self, n: int) -> None:
        rng = random.Random(f"{self.tag}-{n}")
        connection, sent = None, 0
        while not self._stop.is_set():
            batch = [
                {
                    "event_id": f"{self.tag}-{n}-{sent + i}",
                    "user_id": rng.choice(self.users),
                    "track_id": rng.choice(self.tracks),
                    "type": rng.choice(TYPES),
                    "ms_played": 120_000,
                }
                for i in range(10)
            ]
            sent += 10
            connection, answer = self._call(connection, "POST", "/feedback", json.dumps(batch).encode())
            if answer is not None and answer[0] == 202:
                with self._lock:
                    self.accepted += [(e["user_id"], e["event_id"]) for e in batch]
                    self.tally["degraded"] += bool(json.loads(answer[1]).get("spooled"))
            time.sleep(0.01)

    def _read(self, n: int) -> None:
        rng = random.Random(f"{self.tag}-read-{n}")
        connection = None
        while not self._stop.is_set():
            connection, answer = self._call(
                connection, "GET", f"/recommendations/{rng.choice(self.users)}?count=10", None
            )
            if answer is not None and answer[0] == 200:
                with self._lock:
                    self.tally["degraded"] += bool(json.loads(answer[1]).get("degraded"))
            time.sleep(0.01)

    def _call(self, connection, method: str, path: str, body: bytes | None):
        """One request on a kept-alive connection; returns the connection to reuse and (status, body),
        or None when no answer came (the connection is then dropped)."""
        headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
        with self._lock:
            self.tally["attempted"] += 1
        try:
            connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            status, payload = response.status, response.read()
        except (OSError, http.client.HTTPException):
            if connection is not None:
                connection.close()
            with self._lock:
                self.tally["no answer"] += 1
            time.sleep(0.1)  # the API is down: do not spin
            return None, None
        with self._lock:
            if status < 300:
                self.tally["ok"] += 1
            elif status == 503 and b"spool_full" in payload:
                self.tally["503 full"] += 1
            elif status >= 500:
                self.tally["other 5xx"] += 1
            else:
                self.tally[f"{status}"] += 1
            if status >= 300 and not (status == 503 and b"spool_full" in payload) and len(self.samples) < 3:
                self.samples.append(f"{method} {path.split('?')[0]} -> {status}: {payload[:200]!r}")
        return connection, (status, payload)


class Stack:
    """Redis, the API and the worker as processes this script can stop, kill and start again."""

    def __init__(self, folder: Path, redis_url: str) -> None:
        self.folder, self.redis_url = folder, redis_url
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.workers_started = 0

    def env(self, **env: str) -> dict[str, str]:
        return {
            "ECHOTUNE_HOME": str(self.folder),
            "ECHOTUNE_REDIS_URL": self.redis_url,
            "ECHOTUNE_REDIS_PREFIX": PREFIX,
            "ECHOTUNE_API_KEYS": f"{KEY}:client,{ADMIN_KEY}:admin",
            "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
            "ECHOTUNE_ACCESS_LOG": "false",
            **env,
        }

    def start_api(self, name: str = "api", port: int | None = None, workers: int = 2, **env: str) -> None:
        self.processes[name] = start_api(
            port or self.port, self.env(**env), self.folder / f"{name}.log", workers=workers
        )

    def start_worker(self) -> str:
        self.workers_started += 1
        consumer = f"worker-{self.workers_started}"
        self.processes["worker"] = start(
            ["worker", "--claim-idle-ms", "2000", "--consumer", consumer], self.env(), self.folder / "worker.log"
        )
        return consumer

    def kill(self, name: str) -> None:
        kill(self.processes[name])

    def stop_all(self) -> None:
        for process in self.processes.values():
            stop(process)


def applied_of(r, keys, accepted: list[tuple[str, str]], timeout: float = 120) -> tuple[int, float]:
    """How many of the ``accepted`` events are in their user's applied set, waiting up to ``timeout``
    for the worker (and the spool replays) to catch up. Returns (applied, seconds waited)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for user, event_id in accepted:
        by_user[user].append(event_id)
    started = time.monotonic()
    while True:
        pipe = r.pipeline(transaction=False)
        for user, ids in by_user.items():
            pipe.zmscore(keys.user_applied_events(user), ids)
        applied = sum(score is not None for scores in pipe.execute() for score in scores)
        waited = time.monotonic() - started
        if applied >= len(accepted) or waited > timeout:
            return applied, waited
        time.sleep(0.5)


def keys_naming(r, keys, user: str) -> int:
    """How many keys under the bench's prefix hold ``user``'s id in their name."""
    return sum(user.encode() in key for key in r.scan_iter(match=f"{keys.root}:*", count=1000))


def call(port: int, method: str, path: str, body=None, key: str = KEY) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"X-API-Key": key, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def wait_for_no_key(r, keys, user: str, timeout: float = 60) -> tuple[int, float]:
    """Wait (up to ``timeout``) until no key names ``user``. Returns (keys left, seconds waited)."""
    started = time.monotonic()
    while (left := keys_naming(r, keys, user)) and time.monotonic() - started < timeout:
        time.sleep(0.5)
    return left, time.monotonic() - started


def erased_while_paused(stack: Stack, server, r, keys, user: str, tracks: list[str], admin_port: int) -> dict:
    """Scenario f (see the module docstring). A command the API sent the paused server and gave up on
    (its socket timeout) still runs when the server resumes, so some spooled events may reach the stream
    that way too: the note says how many the worker dropped as erased."""
    before = keys_naming(r, keys, user)
    dropped_before = int(r.hget(keys.feedback_counters(), "dropped_erased") or 0)
    server.pause()
    try:
        spooled = 0
        for n in range(3):
            batch = [
                {"event_id": f"f-{n}-{i}", "user_id": user, "track_id": tracks[i], "type": "track_completed"}
                for i in range(5)
            ]
            status, body = call(stack.port, "POST", "/feedback", batch)
            spooled += 5 if status == 202 and body.get("spooled") else 0
        deleted, _ = call(admin_port, "DELETE", f"/users/{user}", key=ADMIN_KEY)
    finally:
        server.resume()
    left, waited = wait_for_no_key(r, keys, user)
    time.sleep(2)  # the worker's batch that dropped them is counted after its keys went
    worker_dropped = int(r.hget(keys.feedback_counters(), "dropped_erased") or 0) - dropped_before
    spool = stack.folder / "var" / "spool" / PREFIX
    waiting = sum(1 for _ in spool.glob("*-*.jsonl")) if spool.exists() else 0
    print(f"f erased-while-paused: done; {spooled} events spooled, DELETE {deleted}, {left} keys left", flush=True)
    return {
        "name": "f erased-paused",
        "erased user's events": f"{spooled} spooled",
        "DELETE": deleted,
        "keys before": before,
        "keys after": left,
        "after": waited,
        "note": f"spool files left {waiting}; the worker dropped {worker_dropped} as erased",
    }


def dead_letters_of_an_erased_user(stack: Stack, server, r, keys, erased: str, kept: str, tracks: list[str]) -> dict:
    """Scenario g (see the module docstring)."""
    from core.contracts import FeedbackEvent
    from core.feedback_stream import encode

    for user in (erased, kept):
        for i in range(5):
            event = FeedbackEvent(user_id=user, track_id=tracks[i], type="play", event_id=f"g-{user}-{i}").stamped()
            r.xadd(
                keys.feedback_dead_letters(), {"entry": f"0-{i}", "error": "bench: injected", "field:e": encode(event)}
            )
    before = keys_naming(r, keys, erased)
    server.pause()
    try:
        deleted, _ = call(stack.port, "DELETE", f"/users/{erased}", key=ADMIN_KEY)
    finally:
        server.resume()
    done = subprocess.run(
        [sys.executable, "-m", "echotune.cli", "feedback", "replay-dead-letters"],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    replay = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-300:]}
    left, waited = wait_for_no_key(r, keys, erased)
    applied, _ = applied_of(r, keys, [(kept, f"g-{kept}-{i}") for i in range(5)], timeout=60)
    print(f"g dead-letters-erased: done; replay {replay}, DELETE {deleted}, {left} keys left", flush=True)
    return {
        "name": "g dead-letters",
        "erased user's events": f"{replay.get('dropped_erased', '?')} dropped",
        "DELETE": deleted,
        "keys before": before,
        "keys after": left,
        "after": waited,
        "note": f"replayed {replay.get('replayed', '?')}, the other user's applied {applied}/5",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flap-seconds", type=int, default=30, help="length of scenario b")
    parser.add_argument("--scenarios", default="abcdefg", help="which scenarios to run (letters)")
    args = parser.parse_args()
    run = set(args.scenarios)

    import tempfile

    import redis

    from core.contracts import RedisKeys

    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="echotune-faults-"))
    cleanup = ExitStack()
    server = killable_redis(folder / "redis")
    redis_url = server.start()
    cleanup.callback(server.stop)
    keys = RedisKeys(PREFIX)
    r = redis.Redis.from_url(redis_url, socket_timeout=10)
    stack = Stack(folder, redis_url)
    rows: list[tuple[str, Counter, int, int, float, str]] = []
    erasure_rows: list[dict] = []

    def record(name: str, load: Load, note: str) -> None:
        applied, waited = applied_of(redis.Redis.from_url(redis_url, socket_timeout=10), keys, load.accepted)
        rows.append((name, load.tally, len(load.accepted), applied, waited, note))
        for sample in load.samples:
            print(f"  [{name}] unexpected answer: {sample}")
        print(
            f"{name}: done ({note}); accepted {len(load.accepted):,}, applied {applied:,} after {waited:.1f}s",
            flush=True,
        )

    try:
        synthetic = publish_synthetic(redis_url, PREFIX, tracks=3_000, users=800, events=40_000, days=10, seed=5)
        users, tracks = synthetic.users, synthetic.tracks
        print(
            f"stack built in {time.monotonic() - began:.0f}s: {len(users):,} users, {len(tracks):,} tracks; scratch folder {folder}",
            flush=True,
        )
        stack.start_api()
        stack.start_worker()
        time.sleep(2)

        # a. Redis SIGKILLed and restarted under mixed load
        if "a" in run:
            with Load(stack.port, users, tracks, "a", posters=3, readers=3) as load:
                time.sleep(4)
                server.kill()
                time.sleep(1)
                down = readiness(stack.port)
                time.sleep(2)
                server.start()
                time.sleep(6)
            record("a redis-kill", load, f"SIGKILL, down 3 s; readiness while down: {down}")

        # b. Redis stopped and started every 2 s while posting
        if "b" in run:
            with Load(stack.port, users, tracks, "b", posters=3) as load:
                flaps, until = 0, time.monotonic() + args.flap_seconds
                while time.monotonic() < until:
                    time.sleep(2)
                    server.stop()
                    flaps += 1
                    time.sleep(2)
                    server.start()
                time.sleep(3)
            record("b redis-flap", load, f"{flaps} stops in {args.flap_seconds} s")

        # c. the spool fills up: an API of its own (own var dir: own spool) with a 64 KiB cap
        if "c" in run:
            small_port = free_port()
            stack.start_api(
                "api-small",
                port=small_port,
                workers=1,
                ECHOTUNE_SPOOL_MAX_BYTES=str(64 * 1024),
                ECHOTUNE_VAR_DIR=str(folder / "var-small"),
            )
            server.stop()
            with Load(small_port, users, tracks, "c", posters=2) as load:
                deadline = time.monotonic() + 30
                while load.tally["503 full"] < 50 and time.monotonic() < deadline:
                    time.sleep(0.1)
                full = readiness(small_port)
                server.start()
                time.sleep(3)
            stop(stack.processes.pop("api-small"))
            record("c spool-full", load, f"64 KiB spool, Redis down; readiness when full: {full}")

        # d. the API SIGKILLed with posts in flight while its events wait in the spool
        if "d" in run:
            with Load(stack.port, users, tracks, "d", posters=3) as load:
                time.sleep(2)
                server.stop()
                time.sleep(2)
                spooled_before_kill = load.tally["degraded"]
                stack.kill("api")
                server.start()
                stack.start_api()
                time.sleep(4)
            record("d api-kill", load, f"killed after {spooled_before_kill:,} spooled 202s")

        # e. the worker SIGKILLed mid-batch
        if "e" in run:
            consumer = f"worker-{stack.workers_started}"
            with Load(stack.port, users, tracks, "e", posters=4) as load:
                time.sleep(2)
                deadline, pending = time.monotonic() + 10, []
                while not pending and time.monotonic() < deadline:
                    pending = r.xpending_range(
                        keys.feedback_stream(), "workers", min="-", max="+", count=1000, consumername=consumer
                    )
                    time.sleep(0.005)
                stack.kill("worker")
                stack.start_worker()
                time.sleep(6)
            record("e worker-kill", load, f"killed holding {len(pending)} unacknowledged entries")

        # f. events spooled while Redis is paused, their user erased meanwhile through another API (503)
        if "f" in run:
            stack.start_api(
                "api-admin", port=(admin_port := free_port()), workers=1, ECHOTUNE_VAR_DIR=str(folder / "var-admin")
            )
            erasure_rows.append(erased_while_paused(stack, server, r, keys, users[0], tracks, admin_port))
            stop(stack.processes.pop("api-admin"))

        # g. dead letters of an erased user (erased while Redis was paused: 503) replayed by the CLI
        if "g" in run:
            erasure_rows.append(dead_letters_of_an_erased_user(stack, server, r, keys, users[1], users[2], tracks))

        counters = {k.decode(): int(v) for k, v in r.hgetall(keys.feedback_counters()).items()}
        distinct = sum(r.zcard(k) for k in r.scan_iter(match=keys.user_applied_events("*"), count=1000))
        heartbeat = json.loads(urlopen_text(f"http://127.0.0.1:{stack.port}/health/ready"))
    finally:
        stack.stop_all()
        cleanup.close()

    print()
    header = (
        f"{'scenario':<15}"
        + "".join(f"{c:>11}" for c in COLUMNS)
        + f"{'accepted':>11}{'applied':>11}{'caught up':>11}  verdict"
    )
    print(header)
    print("-" * len(header))
    for name, tally, accepted, applied, waited, _ in rows:
        good = accepted == applied and tally["other 5xx"] == 0
        print(
            f"{name:<15}"
            + "".join(f"{tally[c]:>11,}" for c in COLUMNS)
            + f"{accepted:>11,}{applied:>11,}{waited:>10.1f}s  "
            + ("ok" if good else "FAIL")
        )
    print()
    print(
        "requests: attempted = ok + 503 full + other 5xx + no answer (+ any 4xx); degraded = spooled 202s and degraded lists (a subset of ok)"
    )
    print(
        "events: accepted = in a 202 answer; applied = of those, in the user's applied set (the worker stored their effect)"
    )
    print(
        f"all runs: stream counters accepted {counters.get('accepted', 0):,}, applied {counters.get('applied', 0):,}, "
        f"dead-lettered {counters.get('dead_lettered', 0):,}; distinct event ids in applied sets {distinct:,}; "
        f"worker alive at the end: {heartbeat.get('worker_alive')} (newest heartbeat {heartbeat.get('worker_heartbeat_age_seconds') or 0:.1f} s old)"
    )
    if erasure_rows:
        print()
        columns = ("erased user's events", "DELETE", "keys before", "keys after")
        header = f"{'scenario':<17}" + "".join(f"{c:>22}" for c in columns) + f"{'after':>9}  verdict"
        print(header)
        print("-" * len(header))
        for row in erasure_rows:
            good = row["keys after"] == 0 and row["DELETE"] == 503
            print(
                f"{row['name']:<17}"
                + "".join(f"{row[c]!s:>22}" for c in columns)
                + f"{row['after']:>8.1f}s  "
                + ("ok" if good else "FAIL")
                + f"  ({row['note']})"
            )
        print("keys: under the bench's prefix, naming the erased user; DELETE answered 503 (Redis paused): the erasure")
        print("was in the offline log only, and the replay (spool or dead letters) had to find it there")
    print(f"total {time.monotonic() - began:.0f}s")


def readiness(port: int) -> str:
    """``/health/ready`` of the API on ``port`` as "status code status" (e.g. "200 degraded")."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health/ready")
        response = connection.getresponse()
        return f"{response.status} {json.loads(response.read()).get('status')}"
    except (OSError, ValueError) as exc:
        return f"no answer ({type(exc).__name__})"
    finally:
        connection.close()


def urlopen_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


if __name__ == "__main__":
    main()
