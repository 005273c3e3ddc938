"""Hostile clients against the running API: what they cost everybody else.

Starts ``echotune serve`` (one process, the production configuration) on a 20,000-track catalog, then,
while a probe client asks for ordinary recommendations one after another, drives:

1. 300 requests each with 50 random 200-character genres (the length cap refuses them: 422);
2. 300 requests each with 50 random 64-character genres (accepted; they match nothing);
3. feedback whose context carries labels meant to break the metrics exporter, then a scrape;

and, from a second client key (issue 23: limits that count what a client sends, tokens that cannot be
replayed), with feedback limited to 600 events and admin requests to 600 a minute per key:

4. 1,000-event feedback batches (each costs 1,000 events: 429, nothing stored);
5. 300 requests for an unknown track (404s, each counted against the key: the Redis counter says so);
6. 1,000 admin requests while Redis refuses every write (maxmemory 1): the in-process count holds the
   limit (600 answered, then 429) instead of failing open;
7. one request token clicked 20 times (counted once), and a batch with a forged token (202, the event
   counted without it).

Prints, per phase: statuses, the API's RSS before and after, and the probe's P50/P99; then the new
cases' figures against what they should be. Targets (issue "trust under faults and hostile input"): RSS
grows by under 50 MB, the probe's P99 stays under 100 ms, and /metrics answers 200 after the label
injection.

    .venv/bin/python -m bench.abuse
"""

from __future__ import annotations

import json
import random
import statistics
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil

from bench.harness import KEY, free_port, publish_synthetic, scratch_redis, start_api, stop

ABUSER = "bench-abuser-key-0123456789abcdef"
ADMIN = "bench-admin-key-0123456789abcdef"
EVENTS_PER_MINUTE = ADMIN_PER_MINUTE = 600
TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def call(url: str, body: bytes | None = None, key: str = KEY) -> tuple[int, float]:
    status, _, ms = call_json(url, body, key)
    return status, ms


def call_json(url: str, body: bytes | None = None, key: str = KEY) -> tuple[int, dict, float]:
    request = urllib.request.Request(url, data=body, headers={"X-API-Key": key, "Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {}
    return status, answer, (time.perf_counter() - started) * 1000


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

    def __enter__(self) -> Probe:
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
    return {
        "phase": name,
        "statuses": statuses,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "probe_n": len(probe.latencies),
        "probe_p50_ms": p50,
        "probe_p99_ms": p99,
        "probe_statuses": probe.statuses,
    }


def token_cases(base: str, user: str) -> list[tuple[str, str, str]]:
    """One list's token clicked 20 times, and a batch carrying a forged token: (case, expected, got)."""
    _, body, _ = call_json(f"{base}/recommendations/{user}?count=5", key=ABUSER)
    track = body["tracks"][0]["track_id"]
    click = json.dumps(
        {"user_id": user, "track_id": track, "type": "recommendation_clicked", "token": body["token"]}
    ).encode()
    answers = [call_json(f"{base}/feedback", click, ABUSER)[1] for _ in range(20)]
    forged = json.dumps(
        [
            {"user_id": user, "track_id": track, "type": "track_skipped", "token": body["token"][:-4] + "AAAA"},
            {"user_id": user, "track_id": track, "type": "play"},
        ]
    ).encode()
    status, answer, _ = call_json(f"{base}/feedback", forged, ABUSER)
    ignored = [d["index"] for d in answer.get("ignored_tokens", [])]
    return [
        (
            "one token clicked 20 times",
            "accepted 1, duplicates 19",
            f"accepted {sum(a.get('accepted', 0) for a in answers)}, duplicates {sum(a.get('duplicates', 0) for a in answers)}",
        ),
        (
            "a batch with a forged token",
            "202, accepted 2, ignored [0]",
            f"{status}, accepted {answer.get('accepted')}, ignored {ignored}",
        ),
    ]


def counted(redis_url: str, key: str, endpoint: str) -> int:
    """What the API counted for ``key`` against ``endpoint`` in Redis (every window)."""
    import hashlib

    import redis

    client = redis.Redis.from_url(redis_url)
    key_id = hashlib.sha256(key.encode()).hexdigest()[:12]
    total = sum(int(client.get(k) or 0) for k in client.scan_iter(match=f"bench:*ratelimit:{endpoint}:{key_id}:*"))
    client.close()
    return total


def redis_refusing_writes(base: str, users: list[str], api: psutil.Process, redis_url: str) -> dict:
    """1,000 admin requests (404: nobody to show a receipt for) while Redis refuses every write."""
    import redis

    client = redis.Redis.from_url(redis_url)
    before = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", 1)  # full under noeviction: OOM for every write, reads still answered
    try:
        return phase(
            "admin 404s x 1000, Redis refusing writes",
            base,
            users,
            api,
            [(f"{base}/users/nobody/erasure", None, ADMIN)] * 1000,
        )
    finally:
        client.config_set("maxmemory", before)
        client.close()


def main() -> None:
    random.seed(1)
    with scratch_redis("abuse") as (folder, redis_url):
        users = publish_synthetic(
            redis_url, "bench", tracks=20_000, users=5_000, events=150_000, seed=3, played=True
        ).users
        port = free_port()
        settings = {
            "OPENBLAS_NUM_THREADS": "1",
            "ECHOTUNE_HOME": str(folder),
            "ECHOTUNE_REDIS_URL": redis_url,
            "ECHOTUNE_REDIS_PREFIX": "bench",
            "ECHOTUNE_API_KEYS": f"{KEY}:client,{ABUSER}:client,{ADMIN}:admin",
            "ECHOTUNE_RATE_LIMIT_PER_MINUTE": "1000000000",
            "ECHOTUNE_RATE_LIMIT_FEEDBACK_EVENTS_PER_MINUTE": str(EVENTS_PER_MINUTE),
            "ECHOTUNE_RATE_LIMIT_ADMIN_PER_MINUTE": str(ADMIN_PER_MINUTE),
            "ECHOTUNE_ACCESS_LOG": "false",
        }
        base = f"http://127.0.0.1:{port}"
        process = start_api(port, settings, folder / "api.log", workers=1)
        try:
            api = psutil.Process(process.pid)
            for _ in range(200):  # warm up: first requests allocate what every later one reuses
                call(f"{base}/recommendations/{random.choice(users)}?count=20")
            user = users[0]
            long_genres = [
                (f"{base}/recommendations/{user}?" + urllib.parse.urlencode(genres(200)),) for _ in range(300)
            ]
            capped_genres = [
                (f"{base}/recommendations/{user}?" + urllib.parse.urlencode(genres(64)),) for _ in range(300)
            ]
            label = json.dumps(
                [
                    {
                        "user_id": "u1",
                        "track_id": "4uLU6hMCjMI75M1A2tKUQC",
                        "type": "recommendation_clicked",
                        "context": {"algorithm": bad, "variant": "v"},
                    }
                    for bad in ("a|b", 'x"}', "c\nd")
                ]
            ).encode()
            results = [
                phase("50 genres of 200 chars x 300", base, users, api, long_genres),
                phase("50 genres of 64 chars x 300", base, users, api, capped_genres),
                phase("label injection x 100", base, users, api, [(f"{base}/feedback", label)] * 100),
            ]
            metrics_status, _ = call(f"{base}/metrics")
            checks = token_cases(base, users[1])  # before the flood below spends the abuser's feedback window
            batch = json.dumps([{"user_id": f"u{i}", "track_id": TRACK, "type": "play"} for i in range(1000)]).encode()
            results.append(
                phase(
                    f"1,000-event batches x 20 ({EVENTS_PER_MINUTE}/min)",
                    base,
                    users,
                    api,
                    [(f"{base}/feedback", batch, ABUSER)] * 20,
                )
            )
            checks.append(
                ("1,000-event batch at 600 events/min", "429 every time", json.dumps(results[-1]["statuses"]))
            )
            unknown = [(f"{base}/recommendations/{user}/similar/{'0' * 22}", None, ABUSER)] * 300
            before = counted(redis_url, ABUSER, "recommendations")
            results.append(phase("unknown-track 404s x 300", base, users, api, unknown))
            checks.append(
                (
                    "404s counted against the key",
                    "300 more in its Redis counter",
                    str(counted(redis_url, ABUSER, "recommendations") - before),
                )
            )
            results.append(redis_refusing_writes(base, users, api, redis_url))
            checks.append(
                (
                    f"admin 404s while Redis refuses writes ({ADMIN_PER_MINUTE}/min)",
                    f"{ADMIN_PER_MINUTE} answered, then 429",
                    json.dumps(results[-1]["statuses"]),
                )
            )
        finally:
            stop(process)
    print(
        f"\n{'phase':42s} {'statuses':24s} {'RSS before':>11s} {'after':>8s} {'growth':>8s} {'probe n':>8s} {'P50 ms':>7s} {'P99 ms':>7s}"
    )
    for r in results:
        growth = r["rss_after_mb"] - r["rss_before_mb"]
        print(
            f"{r['phase']:42s} {json.dumps(r['statuses']):24s} {r['rss_before_mb']:9.1f}MB {r['rss_after_mb']:6.1f}MB {growth:+7.1f}MB"
            f" {r['probe_n']:8d} {r['probe_p50_ms']:7.1f} {r['probe_p99_ms']:7.1f}"
        )
    total = results[-1]["rss_after_mb"] - results[0]["rss_before_mb"]
    worst = max(r["probe_p99_ms"] for r in results)
    print(f"\n{'case (issue 23)':52s} {'should be':28s} got")
    for case, expected, got in checks:
        print(f"{case:52s} {expected:28s} {got}")
    print(f"\n/metrics after the label injection: {metrics_status}")
    print(
        f"targets: RSS growth {total:+.1f} MB < 50 MB: {total < 50}; probe P99 {worst:.1f} ms < 100 ms: {worst < 100}; "
        f"/metrics 200: {metrics_status == 200}"
    )


if __name__ == "__main__":
    main()
