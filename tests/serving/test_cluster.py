"""What only a Redis Cluster does to the API: slots that move while the API holds an old slot map."""

import pytest
import redis

from core.contracts import RedisKeys
from core.redis_clients import redis_client


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
    vectors, played, _ = client.portal.call(state.user_state, ["1"], known_user_id)
    assert vectors[0] is not None and (vectors[0] == before[0][0]).all() and played == before[1] and played
    response = client.get(f"/recommendations/{known_user_id}")
    assert response.status_code == 200 and not response.json()["degraded"]
