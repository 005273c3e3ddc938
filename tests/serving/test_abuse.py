"""Hostile clients get clear errors and cost nothing: label injection, made-up genres, oversized
values and bodies, batches that would dodge the rate limit, a rate limit that holds while Redis is down."""

import random
import string

from fastapi.testclient import TestClient

from core.clock import ManualClock
from core.contracts import RedisKeys
from serving.main import create_app
from tests.serving.conftest import CLIENT_KEY

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def test_an_event_labelled_with_a_separator_is_refused_and_metrics_still_answer(settings, client, redis_client):
    """Regression: `"algorithm": "a|b"` was accepted, stored in the aggregates, and every /metrics
    scrape from then on answered 500."""
    event = {
        "user_id": "u1",
        "track_id": TRACK,
        "type": "recommendation_clicked",
        "context": {"algorithm": "a|b", "variant": "x\ny"},
    }
    refused = client.post("/feedback", json=event)
    assert refused.status_code == 422
    fields = {d["field"] for d in refused.json()["error"]["details"]}
    assert fields == {"context.algorithm", "context.variant"}
    assert "letters, digits and _.:-" in refused.json()["error"]["message"]
    # a field of another shape already stored (an older version, a hand edit) is skipped, not fatal
    keys = RedisKeys(settings.redis_prefix)
    redis_client.hset(
        keys.feedback_aggregates(), mapping={"a|b|c|d": 3, 'bad"label|x|play': 1, "lowrank_ease|none|play": "NaNx"}
    )
    redis_client.hset(keys.feedback_aggregates(), "lowrank_ease|control|recommendation_shown", 4)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'echotune_feedback_events_total{algorithm="lowrank_ease",type="recommendation_shown",variant="control"} 4.0'
        in metrics.text
    )


def test_made_up_genres_match_nothing_and_leave_nothing_behind(client, known_user_id):
    model = client.app.state.echotune.models.get("champion")
    vocabulary = set(model.genre_rows)
    junk = ["".join(random.choices(string.ascii_letters, k=60)) for _ in range(50)]
    body = client.get(f"/recommendations/{known_user_id}", params=[("genres", g) for g in junk]).json()
    assert body["tracks"] == []
    assert set(model.genre_rows) == vocabulary  # the vocabulary is the catalog's, whatever clients send
    real = sorted(vocabulary)[0]
    mixed = client.get(
        f"/recommendations/{known_user_id}", params=[("genres", junk[0]), ("genres", real.upper())]
    ).json()
    assert mixed["tracks"] and all(real in [g.lower() for g in t["genres"]] for t in mixed["tracks"])


def test_every_string_parameter_has_a_cap_named_in_the_422(client, known_user_id):
    cases = {
        ("genres", "g" * 65): "genres.0",
        ("exclude_artists", "a" * 65): "exclude_artists.0",
        ("exclude_tracks", "t" * 101): "exclude_tracks.0",
        ("algorithm", "x" * 33): "algorithm",
        ("context_genres", "c" * 65): "context_genres.0",
    }
    for (name, value), field in cases.items():
        response = client.get(f"/recommendations/{known_user_id}", params={name: value})
        assert response.status_code == 422, name
        details = response.json()["error"]["details"]
        assert details[0]["field"] == field and "at most" in details[0]["problem"], details
    long_user = client.get(f"/recommendations/{'u' * 129}")
    assert long_user.status_code == 422 and "user_id" in long_user.json()["error"]["message"]
    long_track = client.get(f"/recommendations/{known_user_id}/similar/{'t' * 101}")
    assert long_track.status_code == 422 and "track_id" in long_track.json()["error"]["message"]


def test_every_route_answers_413_to_an_oversized_body_even_without_a_length(settings, published):
    small = settings.model_copy(update={"max_body_bytes": 2048})
    with TestClient(create_app(small), headers={"X-API-Key": CLIENT_KEY}) as client:

        def chunked():  # no Content-Length: the size is only known while reading
            for _ in range(10):
                yield b" " * 1000

        for path in ("/recommendations/batch", "/feedback"):
            response = client.post(path, content=chunked(), headers={"Content-Type": "application/json"})
            assert response.status_code == 413, (path, response.text)
            assert response.json()["error"]["code"] == "body_too_large"
        declared = client.post(
            "/feedback", content=b"[" + b" " * 3000 + b"]", headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413


def test_a_batch_counts_each_user_against_the_rate_limit(settings, published, known_user_id):
    limited = settings.model_copy(update={"rate_limit_per_minute": 10})
    batch = {"requests": [{"user_id": known_user_id, "count": 3}] * 8}
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        first = client.post("/recommendations/batch", json=batch)
        second = client.post("/recommendations/batch", json=batch)
    assert first.status_code == 200 and len(first.json()["results"]) == 8
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"  # 16 users > 10


def test_the_rate_limit_holds_in_process_while_redis_is_down(settings, published, known_user_id):
    limited = settings.model_copy(update={"rate_limit_per_minute": 3, "rate_limit_feedback_events_per_minute": 3})
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        client.app.state.echotune.breaker.failed()  # as after a Redis failure: requests skip Redis
        codes = [client.get(f"/recommendations/{known_user_id}").status_code for _ in range(5)]
        feedback = [
            client.post("/feedback", json={"user_id": "u1", "track_id": TRACK, "type": "play"}).status_code
            for _ in range(4)
        ]
    assert codes == [200, 200, 200, 429, 429]
    assert feedback == [202, 202, 202, 429]  # spooled (Redis is down), then limited in process
