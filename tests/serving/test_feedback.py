import pytest

from core.contracts import RedisKeys
from core.feedback_stream import FeedbackStream

pytestmark = pytest.mark.redis_topologies  # one server and a Redis Cluster

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def event(**fields):
    return {"user_id": "u1", "track_id": TRACK, "type": "play", **fields}


def test_single_and_batched_events_go_to_the_stream(client, settings, redis_client):
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    one = client.post("/feedback", json=event(event_id="a1"))
    assert one.status_code == 202 and one.json()["event_ids"] == ["a1"] and one.json()["accepted"] == 1
    batch = client.post(
        "/feedback", json={"events": [event(), event(type="like"), event(type="explicit_rating", rating=4)]}
    )
    assert batch.status_code == 202 and batch.json()["accepted"] == 3
    assert stream.length() == 4


def test_retried_event_ids_are_not_appended_twice(client, settings, redis_client):
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    for _ in range(3):
        response = client.post("/feedback", json=[event(event_id="same"), event(event_id="other")])
    assert response.json() == {
        "accepted": 0,
        "duplicates": 2,
        "event_ids": ["same", "other"],
        "spooled": False,
        "ignored_tokens": [],
    }
    assert stream.length() == 2


def test_a_bad_event_rejects_the_whole_batch_listing_every_problem(client, settings, redis_client):
    stream = FeedbackStream(redis_client, RedisKeys(settings.redis_prefix))
    response = client.post("/feedback", json=[event(), event(track_id="nope"), event(type="explicit_rating")])
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["index"], d["field"]) for d in details] == [(1, "track_id"), (2, "event")]
    assert "rating is required" in details[1]["problem"]
    assert stream.length() == 0  # nothing written


def test_malformed_bodies(client):
    assert client.post("/feedback", content=b"{not json").json()["error"]["code"] == "invalid_json"
    assert client.post("/feedback", json=[]).status_code == 422
    assert client.post("/feedback", json=[event()] * 1001).status_code == 413


def test_a_stream_at_its_safety_cap_refuses_rather_than_trims(settings, published, redis_client):
    """The stream is trimmed only behind what is drained; when the drain stops it grows to the cap,
    and then new events get a 503 the client retries: nothing accepted is ever trimmed away."""
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from tests.serving.conftest import CLIENT_KEY

    keys = RedisKeys(settings.redis_prefix)
    capped = settings.model_copy(update={"stream_max_entries": 1000})
    for start in range(0, 1000, 250):
        pipe = redis_client.pipeline(transaction=False)
        for i in range(start, start + 250):
            pipe.xadd(keys.feedback_stream(), {"e": b'{"filler": %d}' % i})
        pipe.execute()
    with TestClient(create_app(capped), headers={"X-API-Key": CLIENT_KEY}) as client:
        refused = client.post("/feedback", json=event(event_id="late"))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "stream_full"
    assert refused.headers["Retry-After"] and redis_client.xlen(keys.feedback_stream()) == 1000
    assert not redis_client.exists(keys.feedback_accepted("late"))  # not marked accepted: a retry is welcome
