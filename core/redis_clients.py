"""The one place Redis clients are made: one server, or a Redis Cluster when ``redis_cluster`` is set.

Every process (API, worker, pipelines, CLI) asks here, so ``ECHOTUNE_REDIS_CLUSTER=true`` switches all
of them to the cluster client, which finds the other nodes from the one ``ECHOTUNE_REDIS_URL`` names.
:func:`connect` is the one way a role gets its client from the settings (with that role's timeouts);
:func:`connected` also starts or attaches to the embedded server when no URL is configured.
The key layout keeps what must change together in one hash slot (:mod:`core.contracts.redis_keys`);
the helpers below cover the few commands whose single-node form assumes one server.

TLS: ``ECHOTUNE_REDIS_URL`` says it all, so every client of every process (API, worker, pipeline, CLI;
sync and asyncio; one server or a cluster) gets it from the one string it already reads:
``rediss://host:6380/0?ssl_ca_certs=/etc/echotune/tls/ca.pem&ssl_certfile=/etc/echotune/tls/client.pem&ssl_keyfile=/etc/echotune/tls/client.key``
(redis-py hands the query parameters to its SSL connection: the CA that signed the server's
certificate, and this client's certificate and key for a server started with ``tls-auth-clients yes``).
:func:`check_url` refuses TLS parameters on a plain ``redis://`` URL, unknown ones, and files that are
not there, naming the parameter, before any connection is tried.
"""

from __future__ import annotations

import contextlib
import socket
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.commands.core import Script

if TYPE_CHECKING:
    from core.settings import Settings

SyncClient = redis.Redis | RedisCluster
AsyncClient = aredis.Redis | AsyncRedisCluster

Role = Literal["api", "api_sync", "worker", "pipeline", "cli"]


@dataclass(frozen=True)
class RoleTimeouts:
    """How long a role's client waits on a reply (``socket``) and on connecting (``connect``), in
    seconds; ``health_check``: PING a connection idle this long before using it (0: never);
    ``keepalive``: TCP keepalive probes (refused by redis-py on Unix sockets, so TCP only)."""

    socket: float
    connect: float
    health_check: int = 0
    keepalive: bool = False


# Why each figure (none of them was tuned by a benchmark; each bounds a hang on a dead connection):
API_TIMEOUTS = RoleTimeouts(
    socket=1.0, connect=1.0
)  # the request path: a slow Redis fails fast, the breaker and the spool take over
# the API's synchronous work off the request path, in a thread: loading a model version's vectors (tens
# of MB in one reply) and the rare admin calls (experiments)
API_SYNC_TIMEOUTS = RoleTimeouts(socket=30.0, connect=5.0)
WORKER_BLOCK_MS = 1000  # how long one of the worker's reads waits for new entries on the server
# the worker's socket timeout is its blocking read plus a margin: a read then only times out when the
# connection is dead (a half-open TCP connection after a failover or a NAT dropping the flow would
# otherwise block it forever); keepalive and the health check find such connections sooner
WORKER_TIMEOUTS = RoleTimeouts(socket=WORKER_BLOCK_MS / 1000 + 10.0, connect=5.0, health_check=15, keepalive=True)
PIPELINE_TIMEOUTS = RoleTimeouts(
    socket=300.0, connect=5.0
)  # publishing or draining a whole data set sends large batches in one round trip
CLI_TIMEOUTS = RoleTimeouts(
    socket=30.0, connect=5.0
)  # an operator's command: say so rather than hang when Redis is unreachable
TIMEOUTS: dict[str, RoleTimeouts] = {
    "api": API_TIMEOUTS,
    "api_sync": API_SYNC_TIMEOUTS,
    "worker": WORKER_TIMEOUTS,
    "pipeline": PIPELINE_TIMEOUTS,
    "cli": CLI_TIMEOUTS,
}


def connection_options(role: Role, url: str, socket_timeout: float | None = None) -> dict[str, Any]:
    """The redis-py connection options of ``role`` for ``url`` (``socket_timeout`` overrides the role's,
    e.g. a worker with a longer blocking read). Raises ValueError naming an unknown role."""
    if role not in TIMEOUTS:
        raise ValueError(f"unknown Redis client role {role!r}: one of {', '.join(TIMEOUTS)}")
    timeouts = TIMEOUTS[role]
    options: dict[str, Any] = {
        "socket_timeout": timeouts.socket if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": timeouts.connect,
    }
    if timeouts.health_check:
        options["health_check_interval"] = timeouts.health_check
    if timeouts.keepalive and not url.startswith("unix://"):
        options.update(socket_keepalive=True, socket_keepalive_options=_keepalive_options())
    return options


def connect_url(url: str, cluster: bool, role: Role, socket_timeout: float | None = None) -> SyncClient | AsyncClient:
    """A client of the Redis at ``url`` (a node of a cluster when ``cluster``) with ``role``'s timeouts:
    asyncio for ``api``, synchronous for every other role."""
    options = connection_options(role, url, socket_timeout)
    return async_redis_client(url, cluster, **options) if role == "api" else redis_client(url, cluster, **options)


def connect(settings: Settings, role: Role, url: str | None = None) -> SyncClient | AsyncClient:
    """The client ``role`` uses for the configured Redis (``ECHOTUNE_REDIS_URL``, ``ECHOTUNE_REDIS_CLUSTER``),
    or for ``url`` when given (the embedded server's, see :func:`connected`). Raises ValueError when
    there is no URL at all."""
    url = url or settings.redis_url
    if not url:
        raise ValueError(
            "no Redis URL: set ECHOTUNE_REDIS_URL, or use core.redis_clients.connected to start the embedded server"
        )
    return connect_url(url, settings.redis_cluster, role)


@contextlib.contextmanager
def connected(settings: Settings, role: Role) -> Iterator[SyncClient]:
    """A synchronous client of the configured Redis, or of the embedded one (attached to if running,
    else started and stopped on exit), closed on exit."""
    from core.redis_server import redis_url

    with redis_url(settings.redis_url, settings.layout.redis, settings.embedded_redis_maxmemory) as url:
        client = connect(settings, role, url)
        try:
            yield client
        finally:
            client.close()


def _keepalive_options() -> dict[int, int]:
    """Probe an idle connection after 15 s, every 5 s, give up after 3 unanswered probes (Linux names;
    elsewhere the system defaults)."""
    wanted = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


# the TLS parameters a rediss:// URL may carry (redis-py's SSL connection options), and which name files
TLS_FILE_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
TLS_PARAMETERS = (*TLS_FILE_PARAMETERS, "ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_path", "ssl_min_version")


def check_url(url: str) -> str:
    """``url`` if its TLS query parameters can work: only on ``rediss://``, only the ones redis-py knows
    (:data:`TLS_PARAMETERS`), files that exist. Raises ValueError naming ECHOTUNE_REDIS_URL, the
    parameter and what to do."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    tls = sorted(name for name in query if name.startswith("ssl_"))
    if tls and parts.scheme != "rediss":
        raise ValueError(
            f"ECHOTUNE_REDIS_URL carries TLS parameters ({', '.join(tls)}) but its scheme is {parts.scheme}://: "
            "use rediss:// for TLS"
        )
    unknown = [name for name in tls if name not in TLS_PARAMETERS]
    if unknown:
        raise ValueError(
            f"ECHOTUNE_REDIS_URL: unknown TLS parameter {unknown[0]!r}; known: {', '.join(TLS_PARAMETERS)}"
        )
    for name in TLS_FILE_PARAMETERS:
        for value in query.get(name, []):
            if not Path(value).is_file():
                raise ValueError(f"ECHOTUNE_REDIS_URL: {name}={value} is not a file (a PEM file this process can read)")
    if ("ssl_certfile" in query) != ("ssl_keyfile" in query):
        raise ValueError("ECHOTUNE_REDIS_URL: a client certificate needs both ssl_certfile and ssl_keyfile")
    return url


def _check(url: str, cluster: bool) -> None:
    check_url(url)
    if cluster and not url.startswith(("redis://", "rediss://")):
        raise ValueError(
            f"ECHOTUNE_REDIS_CLUSTER needs ECHOTUNE_REDIS_URL to name a cluster node as redis://host:port, not {url!r}"
        )


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
        moved = [
            i for i, r in enumerate(results) if isinstance(r, redis.exceptions.AskError)
        ]  # MovedError is an AskError
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
        missing = {
            id(script): script
            for (script, _, _), reply in zip(calls, replies)
            if isinstance(reply, redis.exceptions.NoScriptError)
        }
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
        return sum(
            int(info["used_memory"]) for info in client.info("memory", target_nodes=RedisCluster.PRIMARIES).values()
        )
    return int(client.info("memory")["used_memory"])
