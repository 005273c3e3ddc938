"""``echotune demo``: the whole platform on one machine.

Starts (or reuses) Redis, runs the pipeline once, then keeps the API, the feedback worker, the Dagster
UI and the MLflow UI running until Ctrl-C, with their logs under ``var/logs``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.redis_server import EmbeddedRedis
from core.settings import Settings
from core.urls import redacted
from pipelines.instance import prepare_instance
from serving.security import demo_keys, key_for_scope

BIN = Path(sys.executable).parent


def _say(message: str) -> None:
    print(f"[echotune] {message}", flush=True)


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _demo_user(settings: Settings) -> str | None:
    """A user with a typical (upper-quartile) history whom the demo experiment serves the champion
    model, so the sample request shows personalisation (a control user would get popularity)."""
    from core.tables import OfflineStore
    from experiments.assignment import Assigner
    from experiments.definition import Experiment
    from experiments.simulation import DEMO_EXPERIMENT

    try:
        graded = OfflineStore(settings.layout.tables).read_interactions()
    except FileNotFoundError:
        return None
    counts = graded[graded["positive"]].groupby("user_id").size().sort_values()
    if not len(counts):
        return None
    experiment = Experiment.from_yaml(DEMO_EXPERIMENT)
    assigner, serves_model = Assigner(experiment), {v.name for v in experiment.variants if v.model_alias}
    candidates = [str(u) for u in counts.index[int(len(counts) * 0.75) :]]
    return next((u for u in candidates if assigner.variant(u) in serves_model), candidates[0])


def feedback_example(user: str, recommendations: dict) -> dict:
    """The body of the sample ``POST /feedback`` the demo prints: ``user`` likes the first track of the
    list the API served them (``recommendations``, a ``GET /recommendations/{user}`` response), so it is
    a track of the catalog and the request is accepted (202) as printed."""
    return {"user_id": user, "track_id": recommendations["tracks"][0]["track_id"], "type": "like"}


def _served(base: str, client_key: str, user: str) -> dict | None:
    """The API's list for ``user`` (None when it cannot be had: the printed curl then names no track)."""
    request = urllib.request.Request(f"{base}/recommendations/{user}?count=5", headers={"X-API-Key": client_key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return body if body.get("tracks") else None


def mlflow_server(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The MLflow UI's command line and the environment it adds. Its store URI (which holds the
    database's password) goes in the environment, ``MLFLOW_BACKEND_STORE_URI``, which ``mlflow server``
    reads for ``--backend-store-uri`` and hands its workers the same way: a command line is shown by
    ``ps`` to every user of the host, an environment only to its owner."""
    command = [str(BIN / "mlflow"), "server", "--host", settings.mlflow_host, "--port", str(settings.mlflow_port)]
    return command, {"MLFLOW_BACKEND_STORE_URI": settings.mlflow_tracking_uri}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings) -> int:
    # SIGTERM or a closed terminal stop the demo like Ctrl-C does: children and Redis go with it
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    for folder in (settings.data_dir, settings.layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        dagster_env = prepare_instance(settings)  # the pipeline and `dagster dev` share one instance
    except (ConnectionError, PermissionError) as exc:  # the database of ECHOTUNE_DATABASE_URL, with what to do
        _say(str(exc))
        return 1
    server = None
    url = settings.redis_url
    if not url:
        server = EmbeddedRedis(settings.layout.redis, settings.embedded_redis_maxmemory)
        url = server.start()
        _say(f"embedded redis-server at {redacted(url)} (data in {settings.layout.redis})")
    env = {**os.environ, "ECHOTUNE_REDIS_URL": url, **dagster_env}
    children: dict[str, subprocess.Popen] = {}
    try:
        _say(
            "materializing every asset: synthetic data -> interactions -> model in MLflow -> vectors in Redis -> experiment report"
        )
        if subprocess.call([sys.executable, "-m", "echotune.cli", "pipeline"], env=env) != 0:
            _say("the pipeline failed; see the output above")
            return 1
        logs = settings.layout.logs
        commands = {
            "api": [
                sys.executable,
                "-m",
                "echotune.cli",
                "serve",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
            ],
            "worker": [sys.executable, "-m", "echotune.cli", "worker"],
            "dagster": [
                str(BIN / "dagster"),
                "dev",
                "-w",
                str(settings.home / "workspace.yaml"),
                "-h",
                settings.dagster_host,
                "-p",
                str(settings.dagster_port),
            ],
        }
        mlflow_command, mlflow_env = mlflow_server(settings)
        commands["mlflow"] = mlflow_command
        for name, command in commands.items():
            log = open(logs / f"{name}.log", "ab")
            children[name] = subprocess.Popen(
                command,
                env={**env, **mlflow_env} if name == "mlflow" else env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=settings.home,
                start_new_session=True,
            )
        base = f"http://{settings.api_host}:{settings.api_port}"
        if not _wait_http(f"{base}/health", 60):
            _say(f"the API did not come up; see {logs / 'api.log'}")
            return 1
        user = _demo_user(settings) or "user_0001"
        report = settings.layout.reports / "demo-champion-vs-popularity" / "report.html"
        keys = settings.api_keys or demo_keys(settings.layout.api_keys)
        client_key, admin_key = key_for_scope(keys, "client"), key_for_scope(keys, "admin")
        listed = _served(base, client_key, user)
        body = (
            feedback_example(user, listed)
            if listed
            else {"user_id": user, "track_id": "<a track id from the list above>", "type": "like"}
        )
        _say("ready:")
        print(
            f"""
  API              {base}/docs
  Dagster UI       http://{settings.dagster_host}:{settings.dagster_port}   (no login: keep it on loopback)
  MLflow UI        http://{settings.mlflow_host}:{settings.mlflow_port}   (no login: keep it on loopback)
  experiment report {report if "synthetic" in settings.enabled_sources else "none (the demo's experiment runs with the synthetic source only)"}

  API keys         client {client_key}
                   admin  {admin_key}   (ECHOTUNE_API_KEYS sets your own)

  try:
    curl -s -H 'X-API-Key: {client_key}' '{base}/recommendations/{user}?count=5'
    curl -s -H 'X-API-Key: {client_key}' -X POST {base}/feedback -H 'Content-Type: application/json' \\
         -d '{json.dumps(body)}'

  logs in {logs}; press Ctrl-C to stop everything.
""",
            flush=True,
        )
        while all(p.poll() is None for p in children.values()):
            time.sleep(1)
        dead = [n for n, p in children.items() if p.poll() is not None]
        _say(f"{', '.join(dead)} stopped unexpectedly; see {logs}")
        return 1
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second signal must not orphan the children
            signal.signal(sig, signal.SIG_IGN)
        for process in children.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in children.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if server is not None:
            server.stop()
