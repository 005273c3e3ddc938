"""The API on shared object storage (a real S3-compatible server): it reads the reports the pipeline
wrote there, and its model cache lives there, so a new host with an empty disk can still answer while
Redis is down."""

import asyncio
import json
import socket

import pytest
import redis.asyncio as aredis
from fastapi.testclient import TestClient
from upath import UPath

from core.contracts import RedisKeys
from core.erasure_log import ErasureLog
from serving.erasure import ErasedUsers
from serving.main import create_app
from tests.serving.conftest import CLIENT_KEY


@pytest.fixture
def settings(settings, storage_url, s3_server):
    return settings.model_copy(update={"storage_url": storage_url, "s3_endpoint_url": s3_server.endpoint_url})


@pytest.mark.slow
def test_reports_written_to_shared_storage_are_served(client, settings):
    report = settings.layout.reports / "exp-shared"
    (report / "summary.json").write_text(json.dumps({"verdict": "ship"}))
    (report / "report.html").write_text("<html><body>Verdict: SHIP</body></html>")
    assert client.get("/experiments/exp-shared/summary").json() == {"verdict": "ship"}
    page = client.get("/experiments/exp-shared/report")
    assert page.status_code == 200 and "Verdict: SHIP" in page.text
    missing = client.get("/experiments/exp-missing/summary")
    assert missing.status_code == 404 and "exp-missing" in missing.json()["error"]["message"]


@pytest.mark.slow
def test_a_new_host_serves_the_cached_model_from_shared_storage_while_redis_is_down(
    client, settings, tmp_path, known_user_id
):
    assert (
        client.get(f"/recommendations/{known_user_id}").json()["model_version"] == "1"
    )  # loaded, and cached in storage
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    other_host = settings.model_copy(
        update={
            "home": tmp_path / "host-b",
            "var_dir": tmp_path / "host-b" / "var",
            "redis_url": f"redis://127.0.0.1:{port}/0",
        }
    )
    with TestClient(create_app(other_host), headers={"X-API-Key": CLIENT_KEY}) as other:
        body = other.get(f"/recommendations/{known_user_id}", params={"count": 4}).json()
    assert body["model_version"] == "1" and body["degraded"] and len(body["tracks"]) == 4
    assert not (tmp_path / "host-b" / "var" / "serving_cache").exists()


@pytest.mark.slow
def test_erasures_stay_known_while_shared_storage_is_unreachable(
    redis_url, redis_prefix, storage_url, s3_server, caplog
):
    """Every POST /feedback refreshes who is erased from the log: an object store that stops answering
    must neither fail the request nor forget an erasure read before."""
    erasures = f"{storage_url}/tables/erasures"
    shared = ErasureLog(UPath(erasures, endpoint_url=s3_server.endpoint_url))
    shared.record_request(shared.digest("user-gone"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    unreachable = ErasureLog(
        UPath(
            erasures, endpoint_url=f"http://127.0.0.1:{port}", retries=1, config_kwargs={"retries": {"max_attempts": 1}}
        )
    )

    async def refresh_twice() -> tuple[bool, bool, bool]:
        client = aredis.Redis.from_url(redis_url)
        erased = ErasedUsers(shared, client, RedisKeys(redis_prefix))
        await erased.refresh(force=True)
        before = erased.erased_at("user-gone") is not None
        unreachable._key = shared._key  # the key was read while the store answered
        erased.log = unreachable
        await erased.refresh(force=True)
        after = (erased.erased_at("user-gone") is not None, erased.erased_at("someone-else") is None)
        await client.aclose()
        return before, *after

    assert asyncio.run(refresh_twice()) == (True, True, True)
    assert "could not read the erasure log" in caplog.text
