"""Every dependency installs from a wheel: pip resolves the project's whole tree (with the dev extra)
for this Python with ``--only-binary=:all:``, which refuses any source release, so `make install`
needs no C or C++ compiler (LightFM, an optional extra that builds from source, is left out)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _pip(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_dependency_installs_from_a_wheel(tmp_path):
    probe = _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(tmp_path / "probe"), "six", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"the package index is not reachable: {probe.stderr.strip().splitlines()[-1:]}")
    report = tmp_path / "report.json"
    resolved = _pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--report",
        str(report),
        "--quiet",
        "-e",
        f"{REPO}[dev]",
        timeout=900,
    )
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    install = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower() for item in install}
    built = sorted(item["metadata"]["name"] for item in install if not item["download_info"]["url"].endswith(".whl"))
    assert built == ["echotune"]  # the project itself (pure Python); nothing else from source
    assert "faiss-cpu" in names and "hnswlib" not in names and "lightfm-next" not in names
