"""MLflow behind its basic-auth app, started the way deploy/kubernetes/mlflow.yaml starts it: the role's
arguments and the environment the manifest gives (the configuration file, the admin's name and
password, the session key), with values of the test's own in place of the secret's. Anonymous calls
are refused, the admin's credentials work, /health (the probes) stays open. Regression (issue 23):
MLflow was reachable cluster-wide without authentication, so anyone could move `champion`."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.waiting import wait_until

pytestmark = pytest.mark.slow
MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "mlflow.yaml"


def _container() -> dict:
    deployment = next(doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc and doc["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _status(url: str, credentials: str | None = None, timeout: float = 5) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet (URLError is an OSError)
        return 0


def test_mlflow_as_the_manifest_starts_it_refuses_anonymous_calls(tmp_path):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (the k8s extra: mlflow[auth])")
    container = _container()
    args = container["args"]
    assert args[0] == "mlflow-ui"  # the entrypoint's role: `mlflow server <store> ... <the rest>`
    env_names = {item["name"]: item for item in container["env"]}
    config = Path(env_names["MLFLOW_AUTH_CONFIG_PATH"]["value"]).name
    (tmp_path / config).write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    secrets = {
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / config),
        "MLFLOW_AUTH_ADMIN_USERNAME": env_names["MLFLOW_AUTH_ADMIN_USERNAME"]["value"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a-password-of-the-test-0123",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-session-key-of-the-test-0123",
    }
    assert set(secrets) <= set(env_names), "the manifest no longer passes what the basic-auth app reads"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = list(args[1:])
    rest[rest.index("--workers") + 1] = "1"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-serve-artifacts",
        *rest,
    ]
    server = subprocess.Popen(
        command, env={**os.environ, **secrets}, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "wb")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: server.poll() is not None or _status(f"{base}/health") == 200,
            90,
            "MLflow's basic-auth server answering /health",
        )
        assert server.poll() is None, (tmp_path / "log").read_text()[-2000:]
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        # generous: the first authenticated call creates the tracking store and checks a PBKDF2 hash
        assert _status(search, timeout=60) == 401
        assert _status(search, "admin:not-the-password", timeout=60) == 401
        assert _status(search, f"admin:{secrets['MLFLOW_AUTH_ADMIN_PASSWORD']}", timeout=60) == 200
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
