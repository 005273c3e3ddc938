"""An erasure that cannot be undone, end to end: delete a user through the API, post new events for
them, flush Redis, re-import their history and run the pipeline. Afterwards no Redis key, no stored
row, no live model version and no log line holds them, and the receipt lists each place."""

import logging

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient

from core.contracts import RedisKeys
from core.model_registry import CHAMPION, ModelRegistry
from core.redis_server import EmbeddedRedis
from core.tables import OfflineStore
from models import load
from pipelines.automation.jobs import everything_job
from pipelines.definitions import build_defs
from serving.main import create_app

pytestmark = pytest.mark.slow
ADMIN, CLIENT = "test-admin-key-0123456789", "test-client-key-0123456789"
TRACK = "4uLU6hMCjMI75M1A2tKUQC"


@pytest.fixture
def own(settings, tmp_path):
    """The settings on a Redis of this test's own (it gets flushed)."""
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = server.start()
    yield settings.model_copy(update={"redis_url": url, "api_keys": f"{CLIENT}:client,{ADMIN}:admin"})
    server.stop()


def _tables_hold(tables, user: str) -> list[str]:
    """Every parquet file under ``tables`` with a row of ``user`` (in any column)."""
    found = []
    for path in sorted(tables.rglob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        text = frame.astype(str)
        if (text == user).any().any() or text.apply(lambda c: c.str.contains(f'"{user}"', regex=False)).any().any():
            found.append(str(path.relative_to(tables)))
    return found


def test_erase_post_flush_reimport_retrain(own, caplog):
    settings = own
    instance = dg.DagsterInstance.ephemeral()
    job = build_defs(settings).resolve_job_def(everything_job.name)
    assert job.execute_in_process(instance=instance).success  # version 1, trained with everyone
    tables = settings.layout.tables
    user = pd.read_parquet(tables / "interactions.parquet")["user_id"].value_counts().index[0]
    assert _tables_hold(tables, user)

    with caplog.at_level(logging.INFO), TestClient(create_app(settings), headers={"X-API-Key": CLIENT}) as api:
        assert api.delete(f"/users/{user}", headers={"X-API-Key": ADMIN}).status_code == 202
        refused = api.post("/feedback", json={"user_id": user, "track_id": TRACK, "type": "like"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "erased_user"
        assert api.get(f"/recommendations/{user}").status_code == 200  # served as a stranger

    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()  # a Redis without its data: the erasure must survive it
    result = job.execute_in_process(instance=instance)  # re-imports the synthetic history, trains, publishes
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["user_erasures"]["erased_users"].value == 1

    # Redis: no key names them, no vector or played set of theirs in any version
    assert not [k for k in client.scan_iter(count=1000) if user.encode() in k]
    # stored rows: none, in any table (events, logs, interactions, rejects, sources, the erasure log)
    assert _tables_hold(tables, user) == []
    # models: version 1 held them and is gone (registry, artifacts, Redis); version 2 never saw them
    registry = ModelRegistry.from_settings(settings)
    assert registry.versions() == ["2"] and registry.alias(CHAMPION) == "2"
    model = load(registry.download("2", settings.home / "download"))
    assert user not in set(model.user_ids)
    assert client.zrange(RedisKeys(settings.redis_prefix).models_index(), 0, -1) == [b"2"]
    # logs: the API's access log and everything the server side logged (httpx is the test's own client)
    server_side = [r for r in caplog.records if not r.name.startswith("httpx")]
    assert server_side and not [r for r in server_side if user in r.getMessage() or user in str(r.__dict__)]

    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT}) as api:
        receipt = api.get(f"/users/{user}/erasure", headers={"X-API-Key": ADMIN}).json()
        again = api.post("/feedback", json={"user_id": user, "track_id": TRACK, "type": "like"})
    assert again.status_code == 422  # still refused after the flush
    places = {r["place"] for r in receipt["removed"]}
    assert places == {
        "redis_online_state",
        "feedback_stream",
        "dead_letters",
        "spool",
        "offline_tables",
        "model_versions",
    }
    versions = next(r for r in receipt["removed"] if r["place"] == "model_versions")
    assert versions["count"] == 1 and "versions 1:" in versions["detail"]
    assert OfflineStore(tables).erasures.subjects()  # recorded by digest, checked above to hold no id
