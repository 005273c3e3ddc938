"""The one place Redis clients are made: one server, or a Redis Cluster when ``redis_cluster`` is set.

Every process (API, worker, pipelines, CLI) asks here, so ``ECHOTUNE_REDIS_CLUSTER=true`` switches all
of them to the cluster client, which finds the other nodes from the one ``ECHOTUNE_REDIS_URL`` names.
The key layout keeps what must change together in one hash slot (:mod:`core.contracts.redis_keys`);
the helpers below cover the few commands whose single-node form assumes one server.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.commands.core import Script

SyncClient = redis.Redis | RedisCluster
AsyncClient = aredis.Redis | AsyncRedisCluster


def _check(url: str, cluster: bool) -> None:
    if cluster and not url.startswith(("redis://", "rediss://")):
        raise ValueError(f"ECHOTUNE_REDIS_CLUSTER needs ECHOTUNE_REDIS_URL to name a cluster node as redis://host:port, not {url!r}")


def redis_client(url: str, cluster: bool = False, **options: Any) -> SyncClient:
    """A synchronous client of the Redis at ``url`` (any node of it when ``cluster``); ``options`` are
    connection options (socket_timeout, ...) that both clients accept."""
    _check(url, cluster)
    return RedisCluster.from_url(url, **options) if cluster else redis.Redis.from_url(url, **options)


def async_redis_client(url: str, cluster: bool = False, **options: Any) -> AsyncClient:
    """The asyncio counterpart of :func:`redis_client`."""
    _check(url, cluster)
    return AsyncRedisCluster.from_url(url, **options) if cluster else aredis.Redis.from_url(url, **options)


def is_cluster(client: object) -> bool:
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def run_scripts(client: SyncClient, calls: Sequence[tuple[Script, Sequence[str], Sequence]]) -> list:
    """Run each ``(script, keys, args)`` call (every call's keys in one slot) and return their results in
    order, raising the first error reply as a pipeline does.

    One server: one pipeline of EVALSHA, one round trip (redis-py's pipelines ask SCRIPT EXISTS before
    each execution, a second round trip); a script the server lacks (restarted, flushed) is loaded and
    the calls are sent again, which the callers' scripts allow (a store whose revision moved, or an entry
    already acknowledged, does nothing the second time). A cluster, whose pipelines refuse scripts: the
    same per node owning the calls' slots; a call whose slot moved meanwhile (MOVED, ASK) runs again
    through the cluster client, which follows the redirect."""
    if not isinstance(client, RedisCluster):
        results = _evalsha_pipeline(client, calls)
    else:
        by_node: dict[str, list[int]] = defaultdict(list)
        nodes = {}
        for i, (_, keys, _) in enumerate(calls):
            node = client.get_node_from_key(keys[0])
            nodes[node.name] = node
            by_node[node.name].append(i)
        results = [None] * len(calls)
        for name, indices in by_node.items():
            replies = _evalsha_pipeline(client.get_redis_connection(nodes[name]), [calls[i] for i in indices])
            for i, reply in zip(indices, replies):
                results[i] = reply
        moved = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.AskError)]  # MovedError is an AskError
        if moved:
            client.nodes_manager.initialize()
            for i in moved:
                script, keys, args = calls[i]
                results[i] = script(keys=keys, args=args, client=client)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _evalsha_pipeline(server: redis.Redis, calls: Sequence[tuple[Script, Sequence[str], Sequence]]) -> list:
    """The replies (errors included) of ``calls`` sent to one server in one pipeline of EVALSHA."""
    for attempt in range(2):
        pipe = server.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        missing = {id(script): script for (script, _, _), reply in zip(calls, replies) if isinstance(reply, redis.exceptions.NoScriptError)}
        if not missing or attempt:
            return replies
        for script in missing.values():
            script.sha = server.script_load(script.script)
    return replies


def mget(client: SyncClient, keys: Sequence[str]) -> list:
    """GET of each of ``keys``: one MGET on a single server, one per slot on a cluster (MGET refuses
    keys of several slots there)."""
    if not keys:
        return []
    return client.mget_nonatomic(list(keys)) if isinstance(client, RedisCluster) else client.mget(list(keys))


def used_memory(client: SyncClient) -> int:
    """Bytes Redis uses for data: of the server, or summed over every primary of a cluster."""
    if isinstance(client, RedisCluster):
        return sum(int(info["used_memory"]) for info in client.info("memory", target_nodes=RedisCluster.PRIMARIES).values())
    return int(client.info("memory")["used_memory"])
