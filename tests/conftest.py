"""Shared fixtures: a real Redis server (embedded, or ECHOTUNE_REDIS_URL with an isolated key prefix),
settings rooted in a temporary folder, and small synthetic data sets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.redis_server import EmbeddedRedis
from core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the whole session: the configured one, else a throwaway embedded server."""
    configured = Settings().redis_url
    if configured:
        yield configured
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_prefix: str) -> Settings:
    """Settings for a project rooted in a temporary folder, with a small synthetic data set."""
    return Settings(
        home=tmp_path,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        synth_tracks=300,
        synth_users=80,
        synth_events=6_000,
        synth_days=5,
        train_params={"dimensions": 16},
    )
