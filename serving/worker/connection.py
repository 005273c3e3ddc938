"""The worker's Redis connection, and which Redis errors are worth waiting out.

The worker's blocking read waits up to ``block_ms`` on the server, so its socket timeout is longer:
a read then only times out when the connection is dead. Without one, a half-open TCP connection (the
server failed over, a NAT dropped the flow) blocks the worker forever. TCP keepalive and redis-py's
health check (a PING before a command on a connection idle that long) find such connections sooner.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

import redis
from redis.commands.core import Script

BLOCK_MS = 1000  # how long one read waits for new entries on the server
TIMEOUT_MARGIN_SECONDS = 10.0  # the socket timeout is the block time plus this
HEALTH_CHECK_SECONDS = 15

# replies that say "not now" rather than "not this entry": the server is loading, read-only after a
# failover, out of memory, unable to persist, busy with a script, or the cluster is reconfiguring.
# Inside a script's error they follow the script's position ("@user_script: 1: -OOM ...").
_TRANSIENT_CODES = re.compile(r"(?:^|[\s:-])(READONLY|OOM|MISCONF|LOADING|BUSY|NOSCRIPT|MASTERDOWN|NOREPLICAS|TRYAGAIN|CLUSTERDOWN)\b")
_TRANSIENT_TYPES = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.NoScriptError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    OSError,
)


def worker_client(url: str, block_ms: int = BLOCK_MS) -> redis.Redis:
    """The Redis client a feedback worker reading with ``block_ms`` blocking reads should use."""
    options: dict = {}
    if not url.startswith("unix://"):  # keepalive is a TCP option (redis-py refuses it for Unix sockets)
        options = {"socket_keepalive": True, "socket_keepalive_options": _keepalive_options()}
    return redis.Redis.from_url(
        url,
        socket_timeout=block_ms / 1000 + TIMEOUT_MARGIN_SECONDS,
        socket_connect_timeout=5.0,
        health_check_interval=HEALTH_CHECK_SECONDS,
        **options,
    )


def run_scripts(client: redis.Redis, calls: Sequence[tuple[Script, Sequence, Sequence]]) -> list:
    """The replies of ``calls`` (script, keys, args), sent in one pipeline: one round trip. A script the
    server does not have (restarted, flushed) is loaded and the calls are sent again, which the
    worker's scripts allow (a store whose revision moved, or an entry acknowledged, does nothing the
    second time). redis-py's pipelines instead ask SCRIPT EXISTS before every execution: a second
    round trip per batch. Raises the first error reply."""
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        missing = {id(script): script for (script, _, _), reply in zip(calls, replies) if isinstance(reply, redis.exceptions.NoScriptError)}
        if not missing or attempt:
            break
        for script in missing.values():
            script.sha = client.script_load(script.script)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis being unavailable for now (retry the same work later), as opposed to
    an error of the work itself (a bad entry, a bug)."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    return isinstance(exc, redis.ResponseError) and _TRANSIENT_CODES.search(str(exc)) is not None


def _keepalive_options() -> dict[int, int]:
    """Probe an idle connection after 15 s, every 5 s, give up after 3 unanswered probes (Linux names;
    elsewhere the system defaults)."""
    wanted = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}
