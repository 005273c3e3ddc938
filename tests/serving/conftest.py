import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from echotune.contracts import RedisKeys
from echotune.synthetic import SyntheticWorld
from echotune.vectorstore import VectorStore
from models import DEFAULT_ALGORITHM, create
from models.training import build_inputs
from models.weighting import graded_interactions
from serving.main import create_app


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


@pytest.fixture
def published(settings, redis_url, world, trained):
    """Version "1" of the model published under the test's key prefix, as the pipeline would."""
    model, graded = trained
    store = VectorStore(redis.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix))
    items = world.tracks.set_index("track_id").reindex(model.item_ids).reset_index()
    items["popularity"] = np.log1p(np.asarray((model.train_matrix > 0).sum(axis=0)).ravel()).astype(np.float32)
    fold = model.fold_in()
    store.publish("1", items, model.item_vectors(), model.user_ids, model.user_vectors(),
                  {"algorithm": model.name, "trained_until": int(graded["timestamp"].max().timestamp() * 1000)},
                  similarity_vectors=model.similarity_vectors(), fold_in=(fold.matrix, fold.tail))  # fmt: skip
    store.add_played(graded.groupby("user_id")["item_id"].agg(list).to_dict())
    store.set_alias("champion", "1")
    return store


CLIENT_KEY, ADMIN_KEY = "test-client-key-0123456789", "test-admin-key-0123456789"


@pytest.fixture
def settings(settings):
    """The shared settings plus API keys of both scopes."""
    return settings.model_copy(update={"api_keys": f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin"})


@pytest.fixture
def client(settings, published):
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as test_client:
        yield test_client


@pytest.fixture
def known_user_id(trained):
    """The user with the longest history."""
    _, graded = trained
    return graded["user_id"].value_counts().index[0]
