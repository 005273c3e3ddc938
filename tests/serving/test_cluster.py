"""What only a Redis Cluster does: slots that move while the API or the worker holds an old slot map."""

import pytest
import redis

from core.contracts import RedisKeys
from core.feedback_stream import FeedbackStream
from core.redis_clients import redis_client, run_scripts
from serving.worker import FeedbackWorker
from tests.serving.test_worker import drain, events_for


@pytest.fixture(scope="module")
def redis_cluster() -> bool:
    return True


def move_slot(url: str, key: str) -> tuple[int, int]:
    """Migrate the slot of ``key`` (and its keys) to another primary, as ``redis-cli --cluster reshard``
    does. Returns (port it left, port it went to)."""
    cluster = redis_client(url, cluster=True)
    slot = cluster.keyslot(key)
    source = cluster.get_node_from_key(key)
    target = next(n for n in cluster.get_primaries() if n.name != source.name)
    src, dst = redis.Redis(port=source.port), redis.Redis(port=target.port)
    src_id, dst_id = src.cluster("MYID"), dst.cluster("MYID")
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.get_primaries():
        redis.Redis(port=node.port).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    cluster.close()
    return source.port, target.port


def test_the_hot_path_follows_a_slot_moved_under_it(client, settings, redis_url, known_user_id):
    """The API sends each node its commands itself; a node that no longer owns a slot answers MOVED, and
    those commands go again through the cluster client (a request is neither lost nor degraded)."""
    assert client.get(f"/recommendations/{known_user_id}").status_code == 200  # the slot map is read
    state = client.app.state.echotune
    before = client.portal.call(state.user_state, ["1"], known_user_id)
    left, went = move_slot(redis_url, RedisKeys(settings.redis_prefix).user_played(known_user_id))
    assert left != went
    vectors, played = client.portal.call(state.user_state, ["1"], known_user_id)
    assert vectors[0] is not None and (vectors[0] == before[0][0]).all() and played == before[1] and played
    response = client.get(f"/recommendations/{known_user_id}")
    assert response.status_code == 200 and not response.json()["degraded"]


def test_the_worker_follows_a_slot_moved_under_it(settings, redis_url, redis_client, published, trained, known_user_id):
    """Reading the user's state and the stream across the moved slots refreshes the worker's slot map;
    every event is applied and counted once."""
    keys = RedisKeys(settings.redis_prefix)
    worker = FeedbackWorker(redis_client, keys, consumer="w1", batch=100, block_ms=10)
    worker.ensure_group()
    stream = FeedbackStream(redis_client, keys)
    tracks = list(trained[0].item_ids[:6])
    stream.append(events_for(known_user_id, tracks[:3], prefix="a"))
    assert drain(worker) == 3  # the worker's client has read the slot map
    move_slot(redis_url, keys.user_revision(known_user_id))
    move_slot(redis_url, keys.feedback_stream())
    stream.append(events_for(known_user_id, tracks[3:], prefix="b"))
    assert drain(worker) == 3
    assert stream.counters() == {"accepted": 6, "applied": 6}
    assert redis_client.zcard(keys.user_applied_events(known_user_id)) == 6


def test_scripts_sent_per_node_follow_a_slot_moved_under_them(redis_url, redis_client, redis_prefix):
    """run_scripts sends each node its calls itself; a call the node answers MOVED runs again through the
    cluster client (which follows the redirect), once."""
    script = redis_client.register_script("return redis.call('INCR', KEYS[1])")
    key = f"{redis_prefix}:{{u:moving}}:n"
    assert run_scripts(redis_client, [(script, [key], [])]) == [1]  # the slot map is read
    move_slot(redis_url, key)
    assert run_scripts(redis_client, [(script, [key], [])]) == [2]
