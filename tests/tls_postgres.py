"""A private PostgreSQL that only takes TLS connections (``hostssl`` in pg_hba.conf, ``hostnossl``
rejected), with a server certificate the test's CA signed: initdb and pg_ctl from the system's
PostgreSQL, run as the ``postgres`` OS user (the server refuses to run as root), in a folder of its
own, on a free port. A test skips with the reason when that is not possible here."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.tls_certificates import Certificates, make_certificates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsPostgres:
    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): TLS to PostgreSQL not tested")
        if os.geteuid() != 0 or not shutil.which("runuser"):
            pytest.skip("starting a private PostgreSQL needs root (to run it as the postgres user) and runuser")
        try:
            import pwd

            self._owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres OS user to run a private PostgreSQL as")
        self.bin = Path(bins[-1]).parent
        # not under pytest's tmp_path: its folders are root's alone, the server's user could not enter them
        self.folder = Path(tempfile.mkdtemp(prefix="echotune-pg-tls-"))
        os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)
        self.certificates: Certificates = make_certificates(self.folder / "tls", client_name="postgres")
        for path in [self.folder / "tls", *(self.folder / "tls").iterdir()]:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        self.port = _free_port()

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=60, check=False
        )

    def start(self) -> TlsPostgres:
        data = self.folder / "data"
        done = self._as_postgres(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N")
        if done.returncode:
            self.stop()
            pytest.skip(f"initdb failed here: {done.stderr.strip()[-300:]}")
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
        )
        c = self.certificates
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off "
            f"-c ssl_cert_file={c.server.cert} -c ssl_key_file={c.server.key} -c ssl_ca_file={c.ca}"
        )
        done = self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )
        if done.returncode:
            log = (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
            self.stop()
            raise RuntimeError(f"the private PostgreSQL did not start: {done.stderr.strip()} {log[-500:]}")
        return self

    def url(self, **params: str) -> str:
        """ECHOTUNE_DATABASE_URL of its ``postgres`` database, with ``params`` (sslmode, sslrootcert, ...)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres" + (f"?{query}" if query else "")

    def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
