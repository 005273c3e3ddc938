"""The whole pipeline at a million tracks: seconds per asset, the total and the peak memory.

Runs ``echotune pipeline`` (every unpartitioned asset, as a user runs it) in a scratch ECHOTUNE_HOME
with its own embedded Redis on a synthetic world of ``--tracks`` tracks, ``--users`` users and
``--events`` events (default 1,000,000 / 100,000 / 5,000,000), samples the resident memory of the
whole process tree (the pipeline, the embedded redis-server) and its CPU seconds every 0.2 s, and afterwards reads each
step's start and end from the Dagster event log. Target (issue 15): under 15 minutes and under 8 GiB
of peak RSS on a 2-core machine.

    .venv/bin/python -m bench.pipeline_scale [--tracks 1000000] [--users 100000] [--events 5000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.harness import ROOT, start, stop


class TreeMemory:
    """Peak of the summed RSS of a process and all its descendants, and their CPU seconds, sampled
    on a thread."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.root, self.every, self.peak, self.peak_main = psutil.Process(pid), every, 0, 0
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                main = self.root.memory_info().rss
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in processes:
                try:
                    total += p.memory_info().rss
                    times = p.cpu_times()
                    self.cpu[p.pid] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            self.peak, self.peak_main = max(self.peak, total), max(self.peak_main, main)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def step_seconds(dagster_home: Path) -> list[tuple[str, str, float, int | None]]:
    """(job, step, seconds, peak RSS MiB of the step's process from its materialization's metadata, see
    pipelines.step_cost; None for checks and steps that record none) of every step of every run in the
    instance, in the order they started."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    instance = dg.DagsterInstance.get()
    steps = []
    for run in reversed(instance.get_runs()):
        started: dict[str, float] = {}
        peaks: dict[str, int] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                started[entry.step_key] = entry.timestamp
            elif event.event_type_value == "ASSET_MATERIALIZATION":
                peak = event.event_specific_data.materialization.metadata.get("step_peak_rss_mib")
                if peak is not None:
                    peaks[entry.step_key] = max(peaks.get(entry.step_key, 0), int(peak.value))
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
                steps.append(
                    (
                        started[entry.step_key],
                        run.job_name,
                        entry.step_key,
                        entry.timestamp - started[entry.step_key],
                        peaks.get(entry.step_key),
                    )
                )
    return [(job, step, seconds, peak) for _, job, step, seconds, peak in sorted(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument(
        "--keep", type=Path, help="scratch ECHOTUNE_HOME to keep (default: a temporary folder, removed)"
    )
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="echotune-scale-"))
    home.mkdir(parents=True, exist_ok=True)
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("ECHOTUNE_")
    }  # embedded Redis, default paths
    env.update(
        ECHOTUNE_HOME=str(home),
        ECHOTUNE_SYNTH_TRACKS=str(args.tracks),
        ECHOTUNE_SYNTH_USERS=str(args.users),
        ECHOTUNE_SYNTH_EVENTS=str(args.events),
        ECHOTUNE_AUTOMATION="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    print(
        f"{args.tracks:,} tracks, {args.users:,} users, {args.events:,} events; home {home}; {os.cpu_count()} cores",
        flush=True,
    )
    began = time.perf_counter()
    process = start(["pipeline"], env, None, cwd=home)
    memory = TreeMemory(process.pid)
    try:
        code = process.wait()
    finally:
        stop(process)  # its own process group: a Ctrl-C here does not reach it
    total = time.perf_counter() - began
    memory.stop()

    print(f"\n{'job':<24} {'step':<58} {'seconds':>8} {'peak MiB':>9}")
    for job, step, seconds, peak in step_seconds(home / "dagster_home"):
        print(f"{job:<24} {step:<58} {seconds:8.1f} {'' if peak is None else f'{peak:,}':>9}")
    print(
        f"\nexit code {code}; total {total:.0f} s ({total / 60:.1f} min, target < 15); "
        f"peak RSS of the process tree {memory.peak / 2**30:.2f} GiB (target < 8), of the pipeline process {memory.peak_main / 2**30:.2f} GiB; "
        f"CPU {sum(memory.cpu.values()):.0f} s (other load on the machine stretches wall time, far less CPU time)"
    )
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
