"""The feedback stream's cap, its idempotency marks and Redis's maxmemory are sized together
(core/feedback_stream.py): a full stream answers 503 while Redis still takes everyone else's writes.
Regression (issue 23): the fixed 5M-entry cap was above the embedded Redis's 2 GB, so Redis reached OOM
first and, under noeviction, every write of every client failed."""

import pytest
import redis
from fastapi.testclient import TestClient

from core.contracts import RedisKeys
from core.feedback_stream import BYTES_PER_EVENT, stream_cap
from core.redis_server import EmbeddedRedis, memory_bytes
from serving.main import create_app
from tests.serving.conftest import CLIENT_KEY

TRACK = "4uLU6hMCjMI75M1A2tKUQC"
MAXMEMORY = "8mb"


@pytest.fixture
def small_redis(tmp_path):
    """A Redis of this test's own with a small maxmemory (noeviction, as the embedded one runs)."""
    server = EmbeddedRedis(tmp_path / "redis", maxmemory=MAXMEMORY)
    server.start()
    yield server
    server.stop()


def batch(start: int, n: int = 500) -> list[dict]:
    """API events as clients send them, with the context a token-less client adds."""
    return [
        {
            "user_id": f"listener-{i % 300}",
            "track_id": TRACK,
            "type": "track_completed",
            "ms_played": 180_000,
            "event_id": f"ev-{i:07d}",
            "context": {"algorithm": "lowrank_ease", "variant": "control", "position": i % 20},
        }
        for i in range(start, start + n)
    ]


def test_the_default_cap_fits_the_embedded_redis():
    assert memory_bytes("2gb") == 2 * 1024**3 and memory_bytes("100m") == 100_000_000
    assert (
        stream_cap(memory_bytes("2gb")) * BYTES_PER_EVENT <= memory_bytes("2gb") // 2
    )  # the old 5M x ~620 B was 3.1 GB


def test_a_full_stream_answers_503_before_redis_reaches_oom(settings, small_redis):
    configured = settings.model_copy(update={"redis_url": small_redis.url, "embedded_redis_maxmemory": MAXMEMORY})
    cap = configured.feedback_stream_cap
    assert cap == stream_cap(memory_bytes(MAXMEMORY))
    admin = redis.Redis.from_url(small_redis.url)
    keys = RedisKeys(settings.redis_prefix)
    statuses = []
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        for start in range(0, 2 * cap, 500):
            response = client.post("/feedback", json=batch(start))
            statuses.append(response.status_code)
            if response.status_code != 202:
                break
            assert not response.json()["spooled"]
    memory = admin.info("memory")
    assert statuses[-1] == 503 and set(statuses[:-1]) == {202}
    assert response.json()["error"]["code"] == "stream_full" and "cap" in response.json()["error"]["message"]
    assert response.headers["Retry-After"]
    assert (
        cap <= admin.xlen(keys.feedback_stream()) < cap + 500
    )  # every accepted event is there; the refused batch is not
    assert memory["used_memory"] < 0.9 * memory["maxmemory"]
    assert admin.set("another-client", b"x" * 100_000)  # Redis still takes everyone else's writes
    admin.close()


def test_a_redis_near_its_maxmemory_refuses_feedback_whatever_the_streams_length(settings, small_redis):
    configured = settings.model_copy(update={"redis_url": small_redis.url, "embedded_redis_maxmemory": MAXMEMORY})
    admin = redis.Redis.from_url(small_redis.url)
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        ballast = []  # vectors, another tenant...: anything but feedback, up to 92% of maxmemory
        while (memory := admin.info("memory"))["used_memory"] < 0.92 * memory["maxmemory"]:
            ballast.append(f"ballast-{len(ballast)}")
            admin.set(ballast[-1], b"x" * 100_000)
        refused = client.post("/feedback", json=batch(0, 10))
        admin.delete(*ballast)
        admin.delete(
            RedisKeys(settings.redis_prefix).feedback_memory_full()
        )  # the script's verdict is cached for 100 ms: no sleeping it out
        accepted = client.post("/feedback", json=batch(10, 10))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "stream_full"
    assert "90% of its maxmemory" in refused.json()["error"]["message"]
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 10 and not accepted.json()["spooled"]
    admin.close()
