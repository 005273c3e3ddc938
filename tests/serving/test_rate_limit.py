"""Rate limits count what a client sends (serving/rate_limit.py): feedback events rather than requests,
refused requests like answered ones, one limit per endpoint class and key, and the in-process count
whenever Redis gives no verdict. Issue 23 items 2 and 7."""

import pytest
import redis
from fastapi.testclient import TestClient

from core.clock import ManualClock
from core.contracts import RedisKeys
from core.redis_server import EmbeddedRedis
from serving.main import create_app
from tests.serving.conftest import ADMIN_KEY, CLIENT_KEY, publish_trained

TRACK = "4uLU6hMCjMI75M1A2tKUQC"


def play(i: int = 0) -> dict:
    return {"user_id": f"u{i % 50}", "track_id": TRACK, "type": "play", "event_id": f"e{i}"}


def test_a_1000_event_batch_at_a_600_a_minute_limit_gets_429_and_stores_nothing(settings, published, redis_client):
    """Regression (issue 23): a batch cost one request, so 6,000 requests a minute carried 6M events."""
    limited = settings.model_copy(update={"rate_limit_feedback_events_per_minute": 600})
    stream = RedisKeys(settings.redis_prefix).feedback_stream()
    clock = ManualClock()
    with TestClient(create_app(limited, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        big = client.post("/feedback", json=[play(i) for i in range(1000)])
        stored_after_big = redis_client.xlen(stream)
        clock.advance(60)  # the next window
        fits = client.post("/feedback", json={"events": [play(i) for i in range(600)]})
        one_more = client.post("/feedback", json=play(600))
    assert big.status_code == 429 and big.json()["error"]["code"] == "rate_limited"
    assert (
        "1,000 feedback events" in big.json()["error"]["message"]
        and "smaller batches" in big.json()["error"]["message"]
    )
    assert stored_after_big == 0
    assert fits.status_code == 202 and fits.json()["accepted"] == 600
    assert (
        one_more.status_code == 429 and "more than 600 feedback events a minute" in one_more.json()["error"]["message"]
    )
    assert redis_client.xlen(stream) == 600


def test_refused_requests_count_and_past_the_limit_the_answer_is_429(settings, published, known_user_id):
    """Regression (issue 23): a 404, 422 or 403 was answered before the read that counts, so a client
    could send them without limit."""
    limited = settings.model_copy(update={"rate_limit_per_minute": 5})
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        refused = [
            client.get(f"/recommendations/{known_user_id}/similar/{'0' * 22}"),  # 404: not in the catalog
            client.get(f"/recommendations/{known_user_id}", params={"count": 0}),  # 422 from the route's query model
            client.get(f"/recommendations/{'u' * 129}"),  # 422 from FastAPI's path validation
            client.get(f"/recommendations/{known_user_id}", params={"exact": "true"}),  # 403: exact needs an admin key
            client.post(
                "/recommendations/batch", json={"requests": [{"user_id": known_user_id, "count": 0}]}
            ),  # 422 body
        ]
        past = [
            client.get(f"/recommendations/{known_user_id}/similar/{'0' * 22}"),
            client.get(f"/recommendations/{known_user_id}"),
        ]
    assert [r.status_code for r in refused] == [404, 422, 422, 403, 422]
    assert [r.status_code for r in past] == [429, 429]
    assert all(r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1 for r in past)


def test_each_endpoint_class_has_its_own_limit_per_key(settings, published, known_user_id):
    limited = settings.model_copy(
        update={
            "rate_limit_per_minute": 2,
            "rate_limit_feedback_events_per_minute": 2,
            "rate_limit_admin_per_minute": 2,
        }
    )
    admin = {"X-API-Key": ADMIN_KEY}
    with TestClient(create_app(limited, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        recommendations = [client.get(f"/recommendations/{known_user_id}").status_code for _ in range(3)]
        events = [
            client.post("/feedback", json=play(i)).status_code for i in range(3)
        ]  # the spent recommendation limit does not stop feedback
        receipts = [client.get("/users/nobody/erasure", headers=admin).status_code for _ in range(3)]  # 404s count too
        admins_recommendations = client.get(f"/recommendations/{known_user_id}", headers=admin).status_code
        client_on_admin_routes = [client.delete("/users/nobody").status_code for _ in range(3)]
    assert recommendations == [200, 200, 429]
    assert events == [202, 202, 429]
    assert receipts == [404, 404, 429]
    assert admins_recommendations == 200  # per key: the admin key's recommendation window is its own
    assert client_on_admin_routes == [403, 403, 429]  # a client key knocking on admin routes is counted there


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, so it can be made to refuse writes."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_a_redis_that_refuses_the_counters_write_still_limits_in_process(
    settings, own_redis, world, trained, known_user_id
):
    """Regression (issue 23): when Redis answered but refused the counter's write (OOM; READONLY after
    a failover) the request passed uncounted: the limit failed open."""
    configured = settings.model_copy(update={"redis_url": own_redis.url, "rate_limit_per_minute": 3})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    admin = redis.Redis.from_url(own_redis.url)
    with TestClient(create_app(configured, clock=ManualClock()), headers={"X-API-Key": CLIENT_KEY}) as client:
        admin.config_set("maxmemory", 1)  # full under noeviction: every write is refused with OOM, reads still answer
        try:
            responses = [client.get(f"/recommendations/{known_user_id}") for _ in range(5)]
        finally:
            admin.config_set("maxmemory", 0)
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert not responses[0].json()["degraded"]  # the user's reads came from Redis: only the count was kept here
    assert not list(admin.scan_iter(match=f"{settings.redis_prefix}:*ratelimit*"))
    admin.close()
