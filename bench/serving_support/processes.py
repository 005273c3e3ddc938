"""What the HTTP benchmarks share: wrk, a scratch folder with its own Redis, starting and stopping
process groups, a free port, and waiting for a server to answer."""

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def require_wrk() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")


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


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120) -> None:
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

    return KillableRedis(folder)
