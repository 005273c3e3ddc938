"""The worker's Redis connection, and which Redis errors are worth waiting out.

The worker's blocking read waits up to ``block_ms`` on the server, so its socket timeout is longer
(the ``worker`` role of :mod:`core.redis_clients`, which gives the reasons): a read then only times
out when the connection is dead.
"""

from __future__ import annotations

import re

import redis

from core.redis_clients import WORKER_BLOCK_MS, WORKER_TIMEOUTS, SyncClient, connect_url

BLOCK_MS = WORKER_BLOCK_MS  # how long one read waits for new entries on the server
TIMEOUT_MARGIN_SECONDS = (
    WORKER_TIMEOUTS.socket - WORKER_BLOCK_MS / 1000
)  # the socket timeout is the block time plus this

# replies that say "not now" rather than "not this entry": the server is loading, read-only after a
# failover, out of memory, unable to persist, busy with a script, or the cluster is reconfiguring.
# Inside a script's error they follow the script's position ("@user_script: 1: -OOM ...").
_TRANSIENT_CODES = re.compile(
    r"(?:^|[\s:-])(READONLY|OOM|MISCONF|LOADING|BUSY|NOSCRIPT|MASTERDOWN|NOREPLICAS|TRYAGAIN|CLUSTERDOWN)\b"
)
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


def worker_client(url: str, block_ms: int = BLOCK_MS, cluster: bool = False) -> SyncClient:
    """The Redis client a feedback worker reading with ``block_ms`` blocking reads should use
    (``cluster``: ``url`` names a node of a Redis Cluster)."""
    return connect_url(url, cluster, "worker", socket_timeout=block_ms / 1000 + TIMEOUT_MARGIN_SECONDS)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis being unavailable for now (retry the same work later), as opposed to
    an error of the work itself (a bad entry, a bug)."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    return isinstance(exc, redis.ResponseError) and _TRANSIENT_CODES.search(str(exc)) is not None
