"""Import speed and memory of Spotify extended streaming history exports.

Writes N synthetic export rows (default 1,000,000) as Spotify does: JSON arrays of ~25,000 rows per
file, full field set including PII, a few podcast and incognito rows, then imports them in a fresh
process with ``core.ingest.service.ingest_history`` and prints events/s and the importing process's
peak memory (RSS high-water mark). Target: >= 200,000 events/s and < 1 GiB.

    .venv/bin/python -m bench.ingest_history [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROWS_PER_FILE = 25_000


def write_exports(folder: Path, rows: int, seed: int = 0) -> int:
    """Export files for 4 listeners; returns bytes written."""
    from core.synthetic import SyntheticWorld

    rng = np.random.default_rng(seed)
    world = SyntheticWorld.generate(20_000, 10, seed=seed)
    tracks = world.tracks
    ids, names = tracks["track_id"].to_numpy(), tracks["name"].to_numpy()
    artists, albums = tracks["artists"].map(lambda a: a[0]).to_numpy(), tracks["album"].to_numpy()
    durations = tracks["duration_ms"].to_numpy()
    popularity = np.exp(world.track_appeal)
    popularity /= popularity.sum()
    start = 1_600_000_000
    written = 0
    for f, first in enumerate(range(0, rows, ROWS_PER_FILE)):
        n = min(ROWS_PER_FILE, rows - first)
        user_dir = folder / f"listener{f % 4}"
        user_dir.mkdir(exist_ok=True)
        t = rng.choice(len(ids), size=n, p=popularity)
        when = np.sort(rng.integers(start, start + 3 * 365 * 86_400, size=n))
        outcome = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
        ms = np.where(
            outcome == 0, durations[t], np.where(outcome == 1, rng.integers(2_000, 30_000, n), durations[t] // 2)
        )
        podcast = rng.random(n) < 0.02
        incognito = rng.random(n) < 0.005
        reason = np.array(["trackdone", "fwdbtn", "endplay"])[outcome]
        batch = []
        for i in range(n):
            row = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(when[i]))),
                "username": f"listener{f % 4}",
                "platform": "Android OS 14 API 34 (Google, Pixel 8)",
                "ms_played": int(ms[i]),
                "conn_country": "SE",
                "ip_addr_decrypted": f"10.{i % 250}.{f % 250}.7",
                "user_agent_decrypted": "unknown",
                "master_metadata_track_name": names[t[i]],
                "master_metadata_album_artist_name": artists[t[i]],
                "master_metadata_album_album_name": albums[t[i]],
                "spotify_track_uri": f"spotify:track:{ids[t[i]]}",
                "episode_name": None,
                "episode_show_name": None,
                "spotify_episode_uri": None,
                "reason_start": "trackdone",
                "reason_end": reason[i],
                "shuffle": bool(i % 3 == 0),
                "skipped": bool(outcome[i] == 1),
                "offline": False,
                "offline_timestamp": 0,
                "incognito_mode": bool(incognito[i]),
            }
            if podcast[i]:
                row.update(
                    master_metadata_track_name=None,
                    master_metadata_album_artist_name=None,
                    master_metadata_album_album_name=None,
                    spotify_track_uri=None,
                    episode_name="Episode",
                    episode_show_name="Show",
                )
            batch.append(row)
        data = orjson.dumps(batch)
        (user_dir / f"Streaming_History_Audio_{f:03d}.json").write_bytes(data)
        written += len(data)
    return written


IMPORT = """
import json, resource, sys, time
from pathlib import Path
from core.ingest.pseudonyms import Pseudonymizer
from core.ingest.service import ingest_history
from core.tables import OfflineStore
folder, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) or None
files = sorted(folder.glob("*/*.json"))
started = time.perf_counter()
result = ingest_history(OfflineStore(out), files, Pseudonymizer(b"k" * 32), workers=workers)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "child_peak_mib": children, "files": len(files), **result.summary()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated exports and the store in this folder")
    parser.add_argument(
        "--workers", type=int, default=0, help="parsing processes (0: the importer's default, one per core)"
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="echotune-bench-"))
    exports, store = root / "exports", root / "store"
    exports.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    size = write_exports(exports, args.rows)
    print(
        f"generated {args.rows:,} export rows, {size / 1e6:.0f} MB, in {time.perf_counter() - started:.0f}s", flush=True
    )
    os.sync()  # flush the generated files now, so disk writeback does not run during the timed import
    time.sleep(2)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT, str(exports), str(store), str(args.workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    events = figures["accepted"]
    print(f"files:            {figures['files']}")
    print(
        f"rows read:        {figures['read']:,}  accepted {figures['accepted']:,}  rejected {figures['rejected']:,}  "
        f"dropped {figures['dropped']:,} (podcasts {figures['dropped_podcasts']:,}, incognito {figures['dropped_incognito']:,})"
    )
    print(
        f"import time:      {figures['seconds']:.2f} s (parse, validate, classify, pseudonymise, write {figures['months']} monthly partitions)"
    )
    print(f"events/s:         {events / figures['seconds']:,.0f}   (target >= 200,000)")
    print(f"rows read/s:      {figures['read'] / figures['seconds']:,.0f}")
    print(
        f"peak memory:      {figures['peak_mib']:,.0f} MiB importing process, {figures['child_peak_mib']:,.0f} MiB largest parsing worker "
        f"(RSS high-water marks; target < 1,024)"
    )
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
