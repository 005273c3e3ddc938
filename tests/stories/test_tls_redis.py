"""Issue 23: the API, the feedback worker and the pipeline run against a TLS-only Redis that asks every
client for a certificate, with nothing but ECHOTUNE_REDIS_URL telling them so (a rediss:// URL naming the
CA, the client certificate and its key); a client without the certificate is refused."""

from __future__ import annotations

import dagster as dg
import pytest
import redis
from fastapi.testclient import TestClient

from core.contracts import RedisKeys
from core.feedback_stream import FeedbackStream
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs
from serving.main import create_app
from serving.worker import FeedbackWorker
from serving.worker.connection import worker_client
from tests.conftest import small_settings
from tests.serving.conftest import drain
from tests.tls_certificates import make_certificates
from tests.tls_redis import TlsRedis, client_url

pytestmark = pytest.mark.slow
CLIENT_KEY = "test-client-key-0123456789"


@pytest.fixture
def tls_redis(tmp_path):
    server = TlsRedis(tmp_path / "redis", make_certificates(tmp_path / "tls")).start()
    yield server
    server.stop()


def test_api_worker_and_pipeline_run_against_a_tls_only_redis_with_client_certificates(tmp_path, tls_redis):
    settings = small_settings(tmp_path / "home", tls_redis.url, False, "tls").model_copy(
        update={"api_keys": f"{CLIENT_KEY}:client"}
    )
    keys = RedisKeys(settings.redis_prefix)

    # the pipeline: a real Dagster run publishes the champion's vectors over TLS
    with dg.DagsterInstance.ephemeral() as instance:
        result = build_defs(settings).resolve_job_def(everything_job.name).execute_in_process(instance=instance)
    assert result.success
    published = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "serving_vectors" in published
    direct = redis.Redis.from_url(tls_redis.url)
    assert direct.get(keys.alias("champion")) is not None, "no champion published in the TLS Redis"

    # the API: a recommendation from the published vectors, and a feedback event into the stream
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as client:
        health = client.get("/health/ready").json()
        assert health["status"] == "ready" and health["redis"] == "ok", health
        user = _a_known_user(settings)
        answer = client.get(f"/recommendations/{user}", params={"count": 5})
        assert answer.status_code == 200 and not answer.json()["degraded"], answer.json()
        track = answer.json()["tracks"][0]["track_id"]
        taken = client.post("/feedback", json={"user_id": user, "track_id": track, "type": "track_completed"})
        assert taken.status_code == 202 and not taken.json()["spooled"], taken.json()

    # the worker: its own client from the same URL applies that event
    worker = FeedbackWorker(worker_client(settings.redis_url), keys, consumer="tls", batch=100, block_ms=10)
    worker.ensure_group()
    assert drain(worker) >= 1
    assert FeedbackStream(direct, keys).counters()["applied"] >= 1

    # without the client certificate (or without TLS) the server refuses
    port = tls_redis.port
    for url in (client_url(port, tls_redis.certificates, with_client_certificate=False), f"redis://127.0.0.1:{port}/0"):
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()


def _a_known_user(settings) -> str:
    """A user of the synthetic history the model was trained on."""
    from core.tables import OfflineStore

    return str(OfflineStore(settings.layout.tables).read_interactions()["user_id"].value_counts().index[0])
