import pytest
from fastapi.testclient import TestClient

from core import release
from core.contracts import RedisKeys
from core.redis_clients import redis_client
from core.synthetic import SyntheticWorld
from core.vectorstore import VectorStore
from models import DEFAULT_ALGORITHM, create
from models.training import build_inputs
from models.weighting import graded_interactions
from serving.main import create_app


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis names the test of each API operation ``test_no_server_errors[GET /health]``, but
    under pytest 9 all fifteen get the one node id ``...::test_no_server_errors`` (pytest 9 builds the id
    from ``originalname``, which schemathesis sets to the bare name). pytest-xdist schedules by node id
    and ran one of the fifteen (`make test` runs on every core): each id gets its operation back."""
    for item in items:
        _, bracket, params = item.name.partition("[")
        if bracket and getattr(item, "operation_label", None) and item.id.params is None:
            item._id = item.id.with_params(params.removesuffix("]"))


@pytest.fixture(scope="session")
def world():
    return SyntheticWorld.generate(300, 60, seed=4)


@pytest.fixture(scope="session")
def trained(world):
    events = world.events(5_000, days=3)
    graded = graded_interactions(events, world.tracks.set_index("track_id")["duration_ms"])
    matrix, features = build_inputs(graded, world.tracks)
    model = create(DEFAULT_ALGORITHM).fit(matrix, features)
    return model, graded


def publish_trained(url: str, prefix: str, world, trained, cluster: bool = False) -> VectorStore:
    """Version "1" of the trained model published under ``prefix`` through the release path the
    pipeline takes, and made champion (``cluster``: ``url`` names a Redis Cluster node)."""
    model, graded = trained
    store = VectorStore(redis_client(url, cluster), RedisKeys(prefix))
    trained_until = int(graded["timestamp"].max().timestamp() * 1000)
    release.publish(store, "1", model, world.tracks, trained_until, alias="champion")
    release.publish_played(store, graded)
    return store


@pytest.fixture
def published(settings, redis_url, world, trained):
    """Version "1" of the model published under the test's key prefix, as the pipeline would."""
    return publish_trained(redis_url, settings.redis_prefix, world, trained, settings.redis_cluster)


CLIENT_KEY, ADMIN_KEY = "test-client-key-0123456789", "test-admin-key-0123456789"


@pytest.fixture
def settings(settings):
    """The shared settings plus API keys of both scopes."""
    return settings.model_copy(update={"api_keys": f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin"})


@pytest.fixture
def client(settings, published):
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as test_client:
        yield test_client


# --- shared by a module's read-only tests ----------------------------------------------------------
# Publishing version 1 and starting an app cost ~0.3-1 s a test; a module whose tests only ask the API
# (they post no feedback, move no alias, erase nobody) shares one of each by overriding ``client`` and
# ``published`` with these. A test that writes keeps the function-scoped ones: its own key prefix.
@pytest.fixture(scope="module")
def shared_settings(module_settings):
    """The module's settings plus API keys of both scopes."""
    return module_settings.model_copy(update={"api_keys": f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin"})


@pytest.fixture(scope="module")
def shared_published(shared_settings, redis_url, world, trained):
    """Version "1" published under the module's key prefix, as ``published`` does for a test."""
    return publish_trained(redis_url, shared_settings.redis_prefix, world, trained, shared_settings.redis_cluster)


@pytest.fixture(scope="module")
def shared_client(shared_settings, shared_published):
    """One API app for the module, on the module's published version."""
    with TestClient(create_app(shared_settings), headers={"X-API-Key": CLIENT_KEY}) as test_client:
        yield test_client


@pytest.fixture
def known_user_id(trained):
    """The user with the longest history."""
    _, graded = trained
    return graded["user_id"].value_counts().index[0]


def flush_exposures(client) -> None:
    """Send the exposures the API holds now (its background task does this every 0.2 s)."""
    client.portal.call(client.app.state.echotune.flush_exposures)


def drain(worker) -> int:
    """Step ``worker`` until a step handles nothing; returns how many stream entries it handled. Fails
    when that is none: every caller has just put something on the stream, and a drain that ran zero
    steps would let the assertions after it pass on a worker that never looked."""
    total = 0
    while handled := worker.step():
        total += handled
    assert total, "the worker found nothing on the stream to handle"
    return total


def served(client, user_id: str, count: int = 5, **params) -> dict:
    """A recommendation response for ``user_id`` (its list is recorded as shown, and its token signs it)."""
    response = client.get(f"/recommendations/{user_id}", params={"count": count, **params})
    assert response.status_code == 200, response.text
    return response.json()
