#!/usr/bin/env python3
"""The image's Docker HEALTHCHECK, one for every role (Kubernetes ignores it and uses the probes in
deploy/kubernetes/).

Docker runs a health check with the image's environment, not with what the entrypoint chose, so the
role is read from PID 1's command line (``echotune serve``, or docker-init's ``-- echotune-entrypoint
serve``):

- ``serve``: ``GET /health`` on the API port answers 200 (liveness: a Redis outage makes the API
  degraded, not unhealthy);
- ``worker``: the worker's metrics port answers 200 (0 turns the metrics off: nothing to probe);
- the code server (``code-server`` or ``dagster api grpc``): its gRPC port accepts a connection;
- the MLflow UI (``mlflow-ui``, which runs ``mlflow server``): ``GET /health`` answers 200;
- anything else (``pipeline``, Dagster's webserver and daemon, one-off commands): healthy.

Ports come from ``--port`` / ``--metrics-port`` / ``-p`` on that command line, else from
``ECHOTUNE_API_PORT`` / ``ECHOTUNE_WORKER_METRICS_PORT`` with their defaults (4000 and 5000 for the
code server and MLflow). Standard library only:
it runs every 30 s and must not pay for importing the project. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path


def _option(argv: list[str], *names: str) -> str | None:
    """The last value given to any of ``names`` (the last one wins, as in click)."""
    found = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            return response.status == 200
    except OSError as exc:
        print(f"GET 127.0.0.1:{port}{path}: {exc}", file=sys.stderr)
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=4):
            return True
    except OSError as exc:
        print(f"connect 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return False


def check(argv: list[str]) -> bool:
    """Whether the role that ``argv`` (PID 1's command line) runs is healthy."""
    if "serve" in argv:
        return _http_ok(int(_option(argv, "--port") or os.environ.get("ECHOTUNE_API_PORT", "8000")), "/health")
    if "worker" in argv:
        port = int(_option(argv, "--metrics-port") or os.environ.get("ECHOTUNE_WORKER_METRICS_PORT", "9101"))
        return port == 0 or _http_ok(port, "/metrics")
    if "code-server" in argv or ("api" in argv and "grpc" in argv):
        return _accepts(int(_option(argv, "-p", "--port") or "4000"))
    if "mlflow-ui" in argv or ("server" in argv and any(Path(arg).name == "mlflow" for arg in argv)):
        return _http_ok(int(_option(argv, "--port") or "5000"), "/health")
    return True


if __name__ == "__main__":
    sys.exit(0 if check(Path("/proc/1/cmdline").read_bytes().decode().split("\0")) else 1)
