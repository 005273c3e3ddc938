"""Property-based fuzzing of the whole API from its own OpenAPI document: whatever schemathesis
generates (valid and invalid), the server never answers 5xx and every error has the one error shape."""

import socket
import threading
import time
import uuid

import numpy as np
import pytest
import redis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from echotune.contracts import RedisKeys
from echotune.settings import Settings
from echotune.vectorstore import VectorStore
from serving.main import create_app
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY

pytestmark = pytest.mark.slow
schema = schemathesis.openapi.from_dict(create_app(Settings(api_keys=f"{CLIENT_KEY}:client")).openapi())
# valid inputs and deliberately invalid ones (wrong types, out-of-range values, missing fields)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def live_url(redis_url, world, trained, tmp_path_factory):
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    model, graded = trained
    store = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(prefix))
    items = world.tracks.set_index("track_id").reindex(model.item_ids).reset_index()
    items["popularity"] = np.log1p(np.asarray((model.train_matrix > 0).sum(axis=0)).ravel()).astype(np.float32)
    store.publish("1", items, model.item_vectors(), model.user_ids, model.user_vectors(), {"algorithm": model.name})
    store.add_played(graded.groupby("user_id")["item_id"].agg(list).to_dict())
    store.set_alias("champion", "1")
    configured = Settings(home=tmp_path_factory.mktemp("fuzz"), redis_url=redis_url, redis_prefix=prefix,
                          api_keys=f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin", rate_limit_per_minute=1_000_000, access_log=False)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(configured), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    store.r.delete(*store.r.keys(f"{prefix}:*"))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live_url):
    response = case.call(base_url=live_url, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) <= {"error", "request_id"} and {"code", "message"} <= set(body["error"]), body
