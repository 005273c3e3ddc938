from fastapi.testclient import TestClient

from core.clock import ManualClock
from core.contracts import RedisKeys
from serving.main import create_app
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY


def test_keys_and_scopes(client, known_user_id):
    assert client.get("/recommendations/u1", headers={"X-API-Key": ""}).status_code == 401
    wrong = client.get("/recommendations/u1", headers={"X-API-Key": "not-a-key-at-all-no"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    forbidden = client.delete(f"/users/{known_user_id}")
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["error"]["message"]
    assert client.post("/feedback", json={}, headers={"X-API-Key": ""}).status_code == 401


def test_burst_past_the_limit_gets_429_with_retry_after(settings, published):
    limited = settings.model_copy(update={"rate_limit_per_minute": 5})
    # a clock that stands still: with the real one, a minute boundary in the burst resets the window
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        codes = [client.get("/recommendations/u1").status_code for _ in range(8)]
        refused = client.get("/recommendations/u1")
        other_key = client.get("/recommendations/u1", headers={"X-API-Key": ADMIN_KEY})
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other_key.status_code == 200  # limits are per key


def test_routes_that_count_outside_the_recommendation_round_trip_are_limited_too(settings, published):
    """POST /feedback counts its events in a round trip of its own, under its own limit."""
    limited = settings.model_copy(update={"rate_limit_feedback_events_per_minute": 3})
    play = {"user_id": "u1", "track_id": "4uLU6hMCjMI75M1A2tKUQC", "type": "play"}
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        codes = [client.post("/feedback", json=play).status_code for _ in range(5)]
        refused = client.post("/feedback", json=play)
    assert codes[:3] == [202] * 3 and set(codes[3:]) == {429}
    assert refused.json()["error"]["code"] == "rate_limited" and 1 <= int(refused.headers["Retry-After"]) <= 60


def test_security_headers_and_body_limit(client):
    response = client.get("/health")
    for header in (
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Content-Security-Policy",
        "Referrer-Policy",
        "Strict-Transport-Security",
    ):
        assert header in response.headers, header
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    big = client.post("/feedback", content=b"[" + b" " * 2_000_000 + b"]", headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"


def test_cors_only_when_configured(settings, published):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(settings)) as closed:
        assert "access-control-allow-origin" not in closed.options("/recommendations/u1", headers=preflight).headers
    opened = settings.model_copy(update={"cors_origins": "https://app.example"})
    with TestClient(create_app(opened)) as client:
        response = client.options("/recommendations/u1", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_gdpr_erasure_removes_online_data_and_records_it(settings, client, published, known_user_id, redis_client):
    keys = RedisKeys(settings.redis_prefix)
    assert published.user_vector("1", known_user_id) is not None and published.played(known_user_id)
    # online learning state as the worker leaves it
    redis_client.rpush(keys.user_recent_events(known_user_id), b"event")
    redis_client.set(keys.user_revision(known_user_id), 3)
    response = client.delete(f"/users/{known_user_id}", headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 202
    places = {r["place"]: r["count"] for r in response.json()["removed"]}
    assert places["redis_online_state"] == 4
    assert not any(redis_client.exists(k) for k in keys.user_keys(known_user_id, ["1"]))
    assert published.user_vector("1", known_user_id) is None and not published.played(known_user_id)
    subject = client.app.state.echotune.erasure_log.digest(known_user_id)
    assert redis_client.hexists(keys.erased_users(), subject) and not redis_client.hexists(
        keys.erased_users(), known_user_id
    )
    after = client.get(f"/recommendations/{known_user_id}").json()
    assert after["algorithm"] == "popularity"  # no vector, no history: treated as a new user


def test_readiness_reports_redis_durability_and_can_require_it(settings, published, redis_client):
    original = redis_client.config_get("appendonly")["appendonly"]
    strict = settings.model_copy(update={"require_redis_aof": True})
    try:
        redis_client.config_set("appendonly", "yes")
        with TestClient(create_app(strict)) as client:
            durable = client.get("/health/ready")
        redis_client.config_set("appendonly", "no")
        with TestClient(create_app(settings)) as client:
            relaxed = client.get("/health/ready")
        with TestClient(create_app(strict)) as client:
            refused = client.get("/health/ready")
    finally:
        redis_client.config_set("appendonly", original)
    assert durable.status_code == 200 and durable.json()["redis_aof"] is True
    assert relaxed.status_code == 200 and relaxed.json()["redis_aof"] is False  # reported, not refused
    assert refused.status_code == 503 and refused.json()["status"] == "not_ready"
