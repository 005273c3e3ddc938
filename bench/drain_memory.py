"""A day's drain in bounded memory: fills a feedback stream with ``--entries`` events accepted on one UTC
day, drains that day the way the ``feedback_events`` asset does (:func:`core.ingest.live_feedback.drain_day`),
in a fresh process, and prints its seconds, the peak RSS of that process, and the entries in against the
rows persisted (and what is left in the stream).

The drain streams pages to parquet: its memory is bounded by the page, not the day (it held every
decoded row before, ~1.35 KB each: ~7 GB for 5M). Target (issue 21): 5,000,000 entries with a peak RSS
under 1 GiB, count in = count persisted. The stream needs ~0.5 KB of Redis memory per entry: the
embedded server gets ``--maxmemory`` (default 8gb).

    .venv/bin/python -m bench.drain_memory [--entries 5000000] [--page 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

DAY = date(2026, 6, 1)  # a fixed past day: event timestamps may not lie in the future
PREFIX = "bench-drain"


def fill(url: str, entries: int) -> float:
    """``entries`` events accepted on DAY (explicit stream ids spread over the day), 10,000 per pipeline."""
    import orjson
    import redis

    from core.contracts import FeedbackEvent, RedisKeys
    from core.feedback_stream import encode

    client, stream = redis.Redis.from_url(url), RedisKeys(PREFIX).feedback_stream()
    start_ms = int(datetime.combine(DAY, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)
    template = orjson.loads(
        encode(
            FeedbackEvent(
                user_id="u",
                track_id="4uLU6hMCjMI75M1A2tKUQC",
                type="track_completed",
                ms_played=180_000,
                timestamp=datetime.combine(DAY, datetime.min.time(), tzinfo=UTC),
                event_id="e",
            ).stamped()
        )
    )
    step = max(1, 86_000_000 // entries)  # ms between entries: all of them inside the day
    began = time.perf_counter()
    for first in range(0, entries, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(first + 10_000, entries)):
            ms = start_ms + i * step
            row = {
                **template,
                "event_id": f"bench-{i:09d}",
                "user_id": f"user_{i % 100_000}",
                "timestamp": datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(),
            }
            pipe.xadd(stream, {"e": orjson.dumps(row)}, id=f"{ms}-{i}")
        pipe.execute()
    return time.perf_counter() - began


def drain_in_this_process(url: str, tables: str, page: int) -> None:
    """The child: drain DAY, print a JSON line with its figures."""
    import redis

    from core.contracts import RedisKeys
    from core.ingest.live_feedback import drain_day
    from core.tables import OfflineStore

    client = redis.Redis.from_url(url)
    idle_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports: what the drain adds is above it
    began = time.perf_counter()
    result = drain_day(client, RedisKeys(PREFIX), OfflineStore(Path(tables)), DAY, page=page)
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "seconds": seconds,
                "read": result.read,
                "accepted": result.accepted,
                "rejected": len(result.rejects),
                "idle_rss_mib": idle_kb / 1024,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=5_000_000)
    parser.add_argument("--page", type=int, default=10_000, help="entries per XRANGE page (the drain's default)")
    parser.add_argument("--maxmemory", default="8gb", help="maxmemory of the scratch Redis")
    parser.add_argument("--child", nargs=2, metavar=("URL", "TABLES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        drain_in_this_process(*args.child, args.page)
        return

    import pyarrow.parquet as pq
    import redis

    from core.contracts import RedisKeys
    from core.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="echotune-drain-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", args.maxmemory)
        url = server.start()
        try:
            print(f"filling the stream with {args.entries:,} entries of {DAY} ...", flush=True)
            fill_seconds = fill(url, args.entries)
            client = redis.Redis.from_url(url)
            stream = RedisKeys(PREFIX).feedback_stream()
            print(
                f"  {fill_seconds:.1f} s; Redis holds {client.info('memory')['used_memory'] / 2**20:,.0f} MiB",
                flush=True,
            )
            tables = Path(tmp) / "tables"
            child = subprocess.run(
                [sys.executable, "-m", "bench.drain_memory", "--child", url, str(tables), "--page", str(args.page)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            files = sorted((tables / "events").glob("date=*/live.parquet"))
            persisted = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            left = client.xlen(stream)
        finally:
            server.stop()
    print(
        f"drain of {args.entries:,} entries: {figures['seconds']:.1f} s ({args.entries / figures['seconds']:,.0f} entries/s)"
    )
    print(
        f"peak RSS of the draining process: {figures['peak_rss_mib']:,.0f} MiB (after imports, before draining: {figures['idle_rss_mib']:,.0f} MiB); "
        f"target < 1024 MiB"
    )
    print(
        f"count in {args.entries:,} = read {figures['read']:,}; persisted {persisted:,} rows in {len(files)} file(s); left in the stream {left:,}"
    )
    ok = figures["read"] == persisted == args.entries and left == 0 and figures["peak_rss_mib"] < 1024
    print(
        "RESULT",
        "ok" if ok else "FAILED",
        f"peak_rss_mib={figures['peak_rss_mib']:.0f} seconds={figures['seconds']:.1f} persisted={persisted}",
    )


if __name__ == "__main__":
    main()
