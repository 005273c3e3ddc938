"""Redis going away: recommendations keep answering (degraded), feedback goes to the spool, readiness
stays 200 (degraded) while the pod can still do both, no 500s."""

import pytest
import redis
from fastapi.testclient import TestClient

from core.clock import ManualClock
from core.contracts import RedisKeys
from core.redis_server import EmbeddedRedis
from serving.main import create_app
from serving.routes.health import SPOOL_READY_ROOM_BYTES
from tests.serving.conftest import CLIENT_KEY, publish_trained
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, so it can be stopped and started again."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_stopping_redis_mid_run_gives_degraded_200s(settings, own_redis, world, trained, known_user_id, tmp_path):
    configured = settings.model_copy(update={"redis_url": own_redis.url})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    clock = ManualClock()
    with TestClient(create_app(configured, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as client:
        before = client.get(f"/recommendations/{known_user_id}", params={"count": 5}).json()
        assert before["algorithm"] == "lowrank_ease" and not before["degraded"]

        own_redis.stop()
        responses = [client.get(f"/recommendations/{known_user_id}", params={"count": 5}) for _ in range(5)]
        assert [r.status_code for r in responses] == [200] * 5
        body = responses[-1].json()
        assert body["degraded"] and "redis unavailable" in body["degraded_reason"]
        assert body["algorithm"] == "popularity" and len(body["tracks"]) == 5
        similar = client.get(f"/recommendations/{known_user_id}/similar/{before['tracks'][0]['track_id']}")
        assert similar.status_code == 200 and similar.json()["degraded"]
        # still in rotation: it answers from its cache and would spool feedback
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.json()
        assert ready.json()["redis"].startswith("down")
        assert client.get("/health/live").json() == {"status": "alive"}

        own_redis.start()  # same folder, same data (append-only file)
        assert client.get(f"/recommendations/{known_user_id}").json()["degraded"]  # the breaker is still open
        clock.advance(1.1)  # past the breaker's cooldown: Redis is tried again
        after = client.get(f"/recommendations/{known_user_id}", params={"count": 5}).json()
        assert not after["degraded"] and after["algorithm"] == "lowrank_ease"


def test_a_connection_redis_dropped_costs_no_degraded_answer(settings, own_redis, world, trained, known_user_id):
    """Redis restarts and idle timeouts close pooled connections; the next request must find out and
    reconnect, not answer degraded (and open the breaker for everyone)."""
    configured = settings.model_copy(update={"redis_url": own_redis.url})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        assert not client.get(f"/recommendations/{known_user_id}").json()["degraded"]
        killed = redis.Redis.from_url(own_redis.url).client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        bodies = [client.get(f"/recommendations/{known_user_id}").json() for _ in range(3)]
    assert [b["degraded"] for b in bodies] == [False] * 3 and bodies[0]["algorithm"] == "lowrank_ease"


def test_starting_while_redis_is_down_serves_the_last_cached_version(
    settings, own_redis, world, trained, known_user_id
):
    configured = settings.model_copy(update={"redis_url": own_redis.url})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    with TestClient(create_app(configured)):
        pass  # first start: loads version 1 and caches it on disk
    own_redis.stop()
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        # keys cannot be rate limited without Redis, requests still pass
        body = client.get(f"/recommendations/{known_user_id}", params={"count": 4}).json()
        health = client.get("/health").json()
    assert body["model_version"] == "1" and body["degraded"] and len(body["tracks"]) == 4
    assert health["models"] == {"champion": "1"} and health["status"] == "degraded"


def test_readiness_stays_200_with_redis_down_until_the_spool_is_full(settings, own_redis, world, trained):
    """Issue 23: a Redis outage took every API pod out of rotation (readiness 503), so the spool that
    exists for exactly that was never reached. Degraded is ready while a model is loaded and the spool
    takes feedback; a full spool is not ready; liveness asks nothing."""
    configured = settings.model_copy(update={"redis_url": own_redis.url, "spool_max_bytes": 16_384})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    track = world.tracks["track_id"].iloc[0]
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        own_redis.stop()
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded" and ready.json()["models"]
        taken = client.post("/feedback", json={"user_id": "u1", "track_id": track, "type": "play"})
        assert taken.status_code == 202 and taken.json()["spooled"]
        answers = [
            client.post(
                "/feedback", json=[{"user_id": f"u{i}-{j}", "track_id": track, "type": "play"} for j in range(5)]
            ).status_code
            for i in range(20)
        ]
        assert 503 in answers, f"a 16 KiB spool never filled: {answers}"
        spool = client.app.state.echotune.spool
        # refused: less room than a 5-event batch, so less than readiness asks for (SPOOL_READY_ROOM_BYTES)
        assert spool.size() + SPOOL_READY_ROOM_BYTES > 16_384
        full = client.get("/health/ready")
        assert full.status_code == 503 and full.json()["status"] == "not_ready"
        assert client.get("/health/live").status_code == 200


def test_feedback_is_spooled_while_redis_is_down_and_replayed_once(settings, own_redis, world, trained, tmp_path):
    configured = settings.model_copy(update={"redis_url": own_redis.url})
    publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    keys = RedisKeys(settings.redis_prefix)
    track = world.tracks["track_id"].iloc[0]
    batch = [{"user_id": "u1", "track_id": track, "type": "play", "event_id": f"spooled-{i}"} for i in range(5)]
    with TestClient(create_app(configured), headers={"X-API-Key": CLIENT_KEY}) as client:
        own_redis.stop()
        first = client.post("/feedback", json=batch[:3])
        second = client.post("/feedback", json=batch)  # a client retry overlapping the first batch
        assert first.status_code == second.status_code == 202
        assert first.json()["spooled"] and second.json()["spooled"]
        spool = client.app.state.echotune.spool
        assert spool.pending() == 8  # on disk, fsync'd, before the 202
        own_redis.start()
        wait_until(lambda: spool.pending() == 0, 10, "the spool replayed into the restarted Redis")
        stream = redis.Redis.from_url(own_redis.url)
        assert stream.xlen(keys.feedback_stream()) == 5  # every event once, though 8 were spooled
        assert int(stream.hget(keys.feedback_counters(), "accepted")) == 5
        again = client.post("/feedback", json=batch[:2]).json()
        assert again == {
            "accepted": 0,
            "duplicates": 2,
            "event_ids": ["spooled-0", "spooled-1"],
            "spooled": False,
            "ignored_tokens": [],
        }


def test_an_event_spooled_while_redis_paused_for_a_user_erased_meanwhile_leaves_no_key(
    settings, own_redis, world, trained, known_user_id, tmp_path
):
    """Issue 23's story: Redis pauses (SIGSTOP of this test's own server); host A spools an event of a user;
    the user's erasure reaches host B, whose DELETE records it in the offline log and answers 503 (Redis
    unreachable: Redis's copy of the erasures never hears of it, and B cannot touch A's spool). Redis
    comes back, A replays its spool, the worker drains the stream: no key names the user."""
    import os
    import signal

    from core.tables import OfflineStore
    from serving.feedback import replay_spool
    from serving.worker import FeedbackWorker
    from tests.serving.conftest import ADMIN_KEY, drain

    configured = settings.model_copy(update={"redis_url": own_redis.url})
    host_b = configured.model_copy(update={"var_dir": tmp_path / "host-b"})  # its own spool, the same offline store
    store = publish_trained(own_redis.url, settings.redis_prefix, world, trained)
    keys = RedisKeys(settings.redis_prefix)
    user, track = known_user_id, world.tracks["track_id"].iloc[0]
    assert store.played(user) and store.user_vector("1", user) is not None
    clock = ManualClock()
    paused = own_redis._process.pid
    with (
        TestClient(create_app(configured, clock=clock), headers={"X-API-Key": CLIENT_KEY}) as host_a,
        TestClient(create_app(host_b), headers={"X-API-Key": ADMIN_KEY}) as admin,
    ):
        os.kill(paused, signal.SIGSTOP)
        try:
            batch = [
                {"user_id": user, "track_id": track, "type": "track_completed", "event_id": "paused-1"},
                {"user_id": "someone-else", "track_id": track, "type": "play", "event_id": "paused-2"},
            ]
            spooled = host_a.post("/feedback", json=batch)
            assert spooled.status_code == 202 and spooled.json()["spooled"]
            erased = admin.delete(f"/users/{user}")
            assert erased.status_code == 503 and erased.json()["error"]["code"] == "redis_unavailable"
        finally:
            os.kill(paused, signal.SIGCONT)
        state = host_a.app.state.echotune
        clock.advance(1.1)  # the breaker's cooldown is over: Redis is tried again
        host_a.portal.call(replay_spool, state)
        assert state.spool.files() == []
    client = redis.Redis.from_url(own_redis.url)
    assert not client.hlen(keys.erased_users())  # Redis's copy never heard of the erasure
    worker = FeedbackWorker(
        client, keys, consumer="w1", block_ms=10, erasure_log=OfflineStore(settings.layout.tables).erasures
    )
    worker.ensure_group()
    drain(worker)
    assert [k for k in client.scan_iter(count=1000) if user.encode() in k] == []
    assert store.played("someone-else") == {track}  # the other user's event went through
