"""GDPR erasure that cannot be undone: after DELETE /users/{id}, nothing the user sends, nothing still
queued and no Redis flush brings them back, and the receipt says what was removed where."""

from fastapi.testclient import TestClient

from core.contracts import FeedbackEvent, RedisKeys
from core.feedback_stream import FeedbackStream, encode
from serving.main import create_app
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY

TRACK = "4uLU6hMCjMI75M1A2tKUQC"
ADMIN = {"X-API-Key": ADMIN_KEY}


def _event(user: str, n: int) -> FeedbackEvent:
    return FeedbackEvent(user_id=user, track_id=TRACK, type="play", event_id=f"{user}-{n}").stamped()


def test_queued_events_go_new_events_are_refused_and_the_receipt_lists_each_place(
    settings, client, redis_client, known_user_id
):
    keys = RedisKeys(settings.redis_prefix)
    stream = FeedbackStream(redis_client, keys)
    stream.append([_event(known_user_id, 1), _event(known_user_id, 2), _event("bystander", 1)])
    redis_client.xadd(
        keys.feedback_dead_letters(),
        {
            "entry": "1-0",
            "error": "x",
            "field:e": FeedbackEvent.model_validate(
                {"user_id": known_user_id, "track_id": TRACK, "type": "play", "event_id": "dead-1"}
            )
            .stamped()
            .model_dump_json(),
        },
    )

    spool = client.app.state.echotune.spool  # as if these were accepted while Redis was down
    spool.append([encode(_event(known_user_id, 3)), encode(_event("bystander", 2))], max_bytes=1 << 20)

    erased = client.delete(f"/users/{known_user_id}", headers=ADMIN)
    assert erased.status_code == 202
    places = {r["place"]: r["count"] for r in erased.json()["removed"]}
    assert places["feedback_stream"] == 2 and places["dead_letters"] == 1 and places["redis_online_state"] >= 2
    assert places["spool"] == 1 and spool.pending() == 1
    assert not any(known_user_id.encode() in p.read_bytes() for p in spool.files())
    assert redis_client.xlen(keys.feedback_stream()) == 1  # the bystander's event stays
    assert int(redis_client.get(keys.erasures_version())) == 1
    assert redis_client.hkeys(keys.erased_users()) == [
        client.app.state.echotune.erasure_log.digest(known_user_id).encode()
    ]

    refused = client.post("/feedback", json={"user_id": known_user_id, "track_id": TRACK, "type": "like"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "erased_user"
    assert refused.json()["error"]["details"][0]["field"] == "user_id"
    mixed = client.post(
        "/feedback",
        json=[
            {"user_id": "someone", "track_id": TRACK, "type": "like"},
            {"user_id": known_user_id, "track_id": TRACK, "type": "like"},
        ],
    )
    assert mixed.status_code == 422 and mixed.json()["error"]["details"][0]["index"] == 1
    assert redis_client.xlen(keys.feedback_stream()) == 1  # nothing of either batch was accepted

    receipt = client.get(f"/users/{known_user_id}/erasure", headers=ADMIN)
    assert receipt.status_code == 200 and receipt.json() == erased.json()
    assert client.get("/users/never-erased/erasure", headers=ADMIN).status_code == 404
    assert client.get(f"/users/{known_user_id}/erasure").status_code == 403  # a client key may not read it


def test_a_flushed_redis_forgets_no_erasure(settings, published, redis_client, known_user_id):
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as client:
        assert client.delete(f"/users/{known_user_id}", headers=ADMIN).status_code == 202
    keys = RedisKeys(settings.redis_prefix)
    redis_client.delete(keys.erased_users(), keys.erasures_version())  # what FLUSHALL does to them
    # a new API process: it learns the erasure from the offline log, not from Redis
    with TestClient(create_app(settings), headers={"X-API-Key": CLIENT_KEY}) as client:
        refused = client.post("/feedback", json={"user_id": known_user_id, "track_id": TRACK, "type": "play"})
    assert refused.status_code == 422 and "was erased" in refused.json()["error"]["message"]
