"""Property-based fuzzing of the whole API from its own OpenAPI document: whatever schemathesis
generates (valid and invalid), the server never answers 5xx and every error has the one error shape."""

import socket
import threading
import uuid

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from core.settings import Settings
from serving.main import create_app
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY, publish_trained
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
schema = schemathesis.openapi.from_dict(create_app(Settings(api_keys=f"{CLIENT_KEY}:client")).openapi())
# valid inputs and deliberately invalid ones (wrong types, out-of-range values, missing fields)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def live_url(redis_url, world, trained, tmp_path_factory):
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    store = publish_trained(redis_url, prefix, world, trained)
    configured = Settings(
        home=tmp_path_factory.mktemp("fuzz"),
        redis_url=redis_url,
        redis_prefix=prefix,
        api_keys=f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin",
        rate_limit_per_minute=1_000_000,
        access_log=False,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(configured), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn serving the API")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    store.r.delete(*store.r.keys(f"{prefix}:*"))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live_url):
    response = case.call(base_url=live_url, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert set(body) <= {"error", "request_id"} and {"code", "message"} <= set(body["error"]), body


def test_every_api_operation_is_a_test_of_its_own(request):
    """Regression (issue 22): the operations' tests shared one node id, so pytest-xdist ran one of them
    (tests/serving/conftest.py puts the operation into each id)."""
    ids = [
        item.nodeid
        for item in request.session.items
        if item.nodeid.startswith(f"{request.node.path.relative_to(request.config.rootpath)}::test_no_server_errors")
    ]
    assert len(ids) == len(set(ids)), ids
    assert all(i.endswith("]") for i in ids), ids
