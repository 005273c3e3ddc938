"""Hosts that share no disk: `echotune pipeline` writes its tables, reports and MLflow artifacts to a
real S3-compatible server (and, where PostgreSQL is reachable, keeps Dagster's and MLflow's stores in it,
as a production deployment does), and an API started from another home (its own var/) serves the
version it released and the report it wrote."""

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import psycopg2
import pytest
import redis

from core.contracts import RedisKeys
from core.model_registry import CHAMPION
from core.settings import Settings
from core.tables import OfflineStore
from core.vectorstore import VectorStore
from tests.conftest import REPO
from tests.object_storage import BUCKET
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
CLIENT_KEY = "test-client-key-0123456789"
EXPERIMENT = "demo-champion-vs-popularity"


@pytest.fixture
def optional_database_url():
    """ECHOTUNE_DATABASE_URL of a fresh database on the PostgreSQL at 127.0.0.1:5432, dropped after; None
    where none is reachable (the test then runs on the SQLite defaults)."""
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        yield None
        return
    admin.autocommit = True
    name = f"echotune_shared_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def _env(home, redis_url, redis_prefix, storage_url, endpoint) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHOTUNE_", "DAGSTER_", "MLFLOW_", "PROMETHEUS_"))}
    env.update(
        ECHOTUNE_HOME=str(home),
        ECHOTUNE_REDIS_URL=redis_url,
        ECHOTUNE_REDIS_PREFIX=redis_prefix,
        ECHOTUNE_STORAGE_URL=storage_url,
        ECHOTUNE_S3_ENDPOINT_URL=endpoint,
        ECHOTUNE_API_KEYS=f"{CLIENT_KEY}:client",
        ECHOTUNE_EXPERIMENTS_DIR=str(REPO / "experiments" / "definitions"),
        ECHOTUNE_AUTOMATION="false",
        ECHOTUNE_SYNTH_TRACKS="300",
        ECHOTUNE_SYNTH_USERS="80",
        ECHOTUNE_SYNTH_EVENTS="6000",
        ECHOTUNE_SYNTH_DAYS="5",
        ECHOTUNE_TRAIN_PARAMS='{"dimensions": 16}',
    )
    return env  # the AWS_* credentials come from the s3_server fixture, as in production from the environment


def _get(url: str) -> dict:
    request = urllib.request.Request(url, headers={"X-API-Key": CLIENT_KEY})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_pipeline_on_object_storage_and_an_api_on_another_disk_serves_its_version(
    tmp_path, redis_url, redis_prefix, storage_url, s3_server, optional_database_url
):
    pipeline_home, api_home = tmp_path / "dagster-host", tmp_path / "api-host"
    (pipeline_home / "dagster_home").mkdir(parents=True)
    env = _env(pipeline_home, redis_url, redis_prefix, storage_url, s3_server.endpoint_url)
    if optional_database_url:
        env["ECHOTUNE_DATABASE_URL"] = optional_database_url
    done = subprocess.run(
        [sys.executable, "-m", "echotune.cli", "pipeline"],
        env=env,
        cwd=pipeline_home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # what the pipeline wrote is on the server, not on its host's disk
    prefix = storage_url.removeprefix(f"s3://{BUCKET}/")
    keys = s3_server.keys(prefix)
    for wanted in (
        "/tables/tracks.parquet",
        "/tables/interactions.parquet",
        f"/reports/{EXPERIMENT}/summary.json",
        "/model.json",
    ):
        assert any(k.endswith(wanted) for k in keys), wanted
    assert any(k.startswith(f"{prefix}/mlflow/") for k in keys)
    assert not list(pipeline_home.rglob("*.parquet")) and not (pipeline_home / "data").exists()
    assert not (pipeline_home / "mlruns" / "artifacts").exists()
    if optional_database_url:  # Dagster's runs and MLflow's registry went to PostgreSQL, not to SQLite files
        assert not list(pipeline_home.rglob("*.db")), list(pipeline_home.rglob("*.db"))
        with psycopg2.connect(optional_database_url) as db, db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM mlflow.model_versions")
            assert cursor.fetchone()[0] >= 1
            cursor.execute("SELECT count(*) FROM dagster.runs")
            assert cursor.fetchone()[0] >= 1

    champion = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(redis_prefix)).alias(CHAMPION)
    assert champion is not None
    shared = Settings(home=api_home, storage_url=storage_url, s3_endpoint_url=s3_server.endpoint_url)
    user = OfflineStore(shared.layout.tables).read_interactions()["user_id"].value_counts().index[0]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_home.mkdir()
    env = _env(api_home, redis_url, redis_prefix, storage_url, s3_server.endpoint_url)
    if optional_database_url:
        env["ECHOTUNE_DATABASE_URL"] = optional_database_url
    server = subprocess.Popen(
        [sys.executable, "-m", "echotune.cli", "serve", "--port", str(port)],
        env=env,
        cwd=api_home,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def answer() -> dict | None:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                return _get(f"http://127.0.0.1:{port}/recommendations/{user}?count=5")
            except (urllib.error.URLError, ConnectionError):
                return None  # not listening yet

        body = wait_until(answer, 60, "the API answering on its port", interval=0.3)
        summary = _get(f"http://127.0.0.1:{port}/experiments/{EXPERIMENT}/summary")
    finally:
        server.terminate()
        server.wait(30)
    assert body["model_version"] == champion and not body["degraded"] and len(body["tracks"]) == 5
    # the simulated world's known answer (80 synthetic users, fewer than the demo's minimum of 500 per variant)
    assert {v["variant"]: v["ctr"] for v in summary["variants"]}["treatment"] > {
        v["variant"]: v["ctr"] for v in summary["variants"]
    }["control"]
    assert summary["verdict"] == "keep running" and "below the minimum sample of 500 users" in summary["reasons"][0], (
        summary["reasons"]
    )
    assert not (api_home / "data").exists() and not list(api_home.rglob("*.parquet"))
