"""What every benchmark runs on, written once: a scratch folder with its own Redis, a role of the
platform (``echotune serve``, ``worker``, ``demo``, ``pipeline``, or another module such as the floor
app) started as a process group with its environment, one wait until it answers, stopping it (SIGTERM,
then SIGKILL), and a synthetic model trained and published through :mod:`core.release`.

    from bench.harness import free_port, publish_synthetic, scratch_redis, start, stop, wait_ready
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "serving_support"  # wrk scripts and the floor app
KEY = "bench-client-key-0123456789abcdef"  # the client API key every bench configures
# one BLAS thread per process: the API and worker processes already use the cores
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def require_wrk() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def scratch_redis(tag: str) -> Iterator[tuple[Path, str]]:
    """A temporary folder with an embedded Redis server in it: (folder, redis url); both go on exit."""
    from core.redis_server import EmbeddedRedis

    folder = Path(tempfile.mkdtemp(prefix=f"echotune-{tag}-"))
    server = EmbeddedRedis(folder / "redis")
    try:
        yield folder, server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def killable_redis(folder: Path):
    """An embedded Redis in ``folder`` that can also be SIGKILLed (``kill()``) and started again on the
    same socket, data and append-only file (``start()``)."""
    from core.redis_server import EmbeddedRedis

    class KillableRedis(EmbeddedRedis):
        def kill(self) -> None:
            """SIGKILL: no shutdown, no final flush; what the append-only file holds is what survives."""
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                self._process = None

        def pause(self) -> None:
            """SIGSTOP: the server holds its connections and answers nothing (clients time out)."""
            os.kill(self._process.pid, signal.SIGSTOP)

        def resume(self) -> None:
            os.kill(self._process.pid, signal.SIGCONT)

    return KillableRedis(folder)


def start(
    role: list[str], env: Mapping[str, str | None], log: Path | None, *, cwd: Path = ROOT, module: str = "echotune.cli"
) -> subprocess.Popen:
    """``python -m module *role`` (e.g. ``["serve", "--port", "8123"]``) in a process group of its own,
    so :func:`stop` and :func:`kill` reach its children (uvicorn workers, the demo's Redis and Dagster).
    ``env`` goes over this process's environment; a ``None`` value removes that variable. Output is
    appended to ``log`` (a restarted role keeps its earlier lines), or goes to this terminal when None."""
    environment = {**os.environ, **env}
    environment = {k: v for k, v in environment.items() if v is not None}
    output = log.open("ab") if log else None
    return subprocess.Popen(
        [sys.executable, "-m", module, *role],
        env=environment,
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(url: str, timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def start_api(
    port: int,
    env: Mapping[str, str | None],
    log: Path,
    *,
    workers: int | None = 2,
    cwd: Path = ROOT,
    timeout: float = 120,
) -> subprocess.Popen:
    """``echotune serve`` on ``port`` (``workers`` None: ECHOTUNE_API_WORKERS), returned once ``/health/ready``
    answers (stopped again if it never does)."""
    process = start(
        ["serve", "--port", str(port), *(["--workers", str(workers)] if workers else [])], env, log, cwd=cwd
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/health/ready", timeout)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after ``timeout`` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the process group: no shutdown, what a crash leaves behind."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class SyntheticModel:
    """The default algorithm trained on a synthetic world (see :func:`train_synthetic`)."""

    world: Any  # core.synthetic.SyntheticWorld
    events: Any  # its raw events (pandas.DataFrame)
    graded: Any  # the graded interactions the model was trained on
    model: Any  # models.base.Recommender

    @property
    def users(self) -> list[str]:
        return list(self.model.user_ids)

    @property
    def tracks(self) -> list[str]:
        return list(self.model.item_ids)

    @property
    def trained_until_ms(self) -> int:
        return int(self.events["timestamp"].max().timestamp() * 1000)


def train_synthetic(tracks: int, users: int, events: int, *, days: int = 30, seed: int = 5) -> SyntheticModel:
    """Train the default algorithm on ``events`` synthetic events of ``users`` users over ``tracks`` tracks."""
    from core.synthetic import SyntheticWorld
    from models import DEFAULT_ALGORITHM, create
    from models.training import build_inputs
    from models.weighting import graded_interactions

    world = SyntheticWorld.generate(tracks, users, seed=seed)
    raw = world.events(events, days=days)
    graded = graded_interactions(raw, world.tracks.set_index("track_id")["duration_ms"])
    matrix, features = build_inputs(graded, world.tracks)
    return SyntheticModel(world, raw, graded, create(DEFAULT_ALGORITHM).fit(matrix, features))


def publish_synthetic(
    redis_url: str,
    prefix: str,
    tracks: int,
    users: int,
    events: int,
    *,
    days: int = 30,
    seed: int = 5,
    played: bool = False,
) -> SyntheticModel:
    """:func:`train_synthetic`, then :func:`core.release.publish` as version "1", ``champion``, to the Redis
    at ``redis_url`` under ``prefix`` (and the users' played tracks with ``played``)."""
    from core import release
    from core.contracts import RedisKeys
    from core.redis_clients import redis_client
    from core.vectorstore import VectorStore

    synthetic = train_synthetic(tracks, users, events, days=days, seed=seed)
    store = VectorStore(redis_client(redis_url), RedisKeys(prefix))
    release.publish(store, "1", synthetic.model, synthetic.world.tracks, synthetic.trained_until_ms, alias="champion")
    if played:
        release.publish_played(store, synthetic.graded)
    return synthetic
