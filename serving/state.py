"""Process-wide state of the API, opened once in the lifespan and reached through ``deps``."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from core.feedback_stream import APPEND_SCRIPT
from core.redis_clients import AsyncClient, SyncClient, connect, is_cluster
from core.redis_server import EmbeddedRedis
from core.settings import Settings
from core.tables import OfflineStore
from core.vectorstore import VectorStore
from serving.disk_cache import DiskCache
from serving.erasure import ErasedUsers
from serving.experiments import ExperimentRouter
from serving.exposures import FLUSH_SECONDS, ExposureBuffer
from serving.model_cache import ModelCache, released_index
from serving.observability import EXPOSURES_LOST
from serving.rate_limit import Charge, RateLimits
from serving.security import ApiKeys, demo_keys
from serving.served_lists import TokenSigner
from serving.spool import Spool
from serving.version_health import VersionHealthCounts

REDIS_ERRORS = (redis.RedisError, OSError)
log = logging.getLogger(__name__)


class RedisUnavailable(Exception):
    pass


class RedisBreaker:
    """After a Redis failure, requests skip Redis for ``cooldown`` seconds and answer degraded at once,
    instead of each one waiting for a connection timeout."""

    def __init__(self, cooldown: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._open_until = float("-inf")

    @property
    def available(self) -> bool:
        return self.clock.monotonic() >= self._open_until

    def failed(self) -> None:
        self._open_until = self.clock.monotonic() + self.cooldown


_SYNC_CLIENT_LOCK = threading.Lock()


@dataclass
class AppState:
    settings: Settings
    keys: RedisKeys
    redis: AsyncClient
    models: ModelCache
    api_keys: ApiKeys
    append_feedback: object  # AsyncScript running APPEND_SCRIPT
    breaker: RedisBreaker
    spool: Spool
    experiments: ExperimentRouter
    embedded: EmbeddedRedis | None = None
    clock: Clock = field(default=SYSTEM_CLOCK)
    rate_limits: RateLimits | None = None
    erased: ErasedUsers | None = None
    exposures: ExposureBuffer | None = None
    tokens: TokenSigner | None = None
    version_health: VersionHealthCounts = field(default_factory=VersionHealthCounts)

    def __post_init__(self) -> None:
        if self.rate_limits is None:
            self.rate_limits = RateLimits(self.settings, self.keys, self.clock, self._round_trip_or_none)
        if self.erased is None:
            self.erased = ErasedUsers(self.erasure_log, self.redis, self.keys, clock=self.clock)
        if self.exposures is None:
            self.exposures = ExposureBuffer(self.keys.feedback_stream())
        if self.tokens is None:
            self.tokens = TokenSigner.from_settings(self.settings, self.clock)

    @functools.cached_property
    def erasure_log(self) -> ErasureLog:
        """The offline erasure log (the authority on who was erased)."""
        return OfflineStore(self.settings.layout.tables).erasures

    @functools.cached_property
    def sync_redis(self) -> SyncClient:
        """One synchronous client for the API's work in threads off the request path (admin calls), made on
        first use (under a lock: two first admin calls in two threads would otherwise make two)."""
        with _SYNC_CLIENT_LOCK:
            if "sync_redis" not in self.__dict__:
                self.__dict__["sync_redis"] = connect(
                    self.settings, "api_sync", self.settings.redis_url or self.embedded.url
                )
            return self.__dict__["sync_redis"]

    @classmethod
    async def open(cls, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> AppState:
        embedded = None
        url = settings.redis_url
        if not url:  # run standalone: attach to (or start) the project's embedded server
            embedded = EmbeddedRedis(settings.layout.redis, settings.embedded_redis_maxmemory)
            url = embedded.start()
        keys = RedisKeys(settings.redis_prefix)
        client = connect(settings, "api", url)

        def store() -> VectorStore:
            return VectorStore(connect(settings, "api_sync", url), keys)

        models = ModelCache(
            client,
            keys,
            store,
            DiskCache(settings.layout.serving_cache(settings.redis_prefix)),
            ann_min_tracks=settings.ann_min_tracks,
            index_source=functools.partial(released_index, settings),
        )
        api_keys = ApiKeys(settings.api_keys or demo_keys(settings.layout.api_keys))
        spool = Spool(settings.layout.spool(settings.redis_prefix))
        state = cls(
            settings,
            keys,
            client,
            models,
            api_keys,
            client.register_script(APPEND_SCRIPT),
            RedisBreaker(clock=clock),
            spool,
            ExperimentRouter(client, keys, clock=clock),
            embedded,
            clock,
        )
        await asyncio.to_thread(_retag_versions, store)
        await state.models.refresh(force=True)
        await state.experiments.refresh()
        await state.erased.refresh(force=True)
        return state

    async def close(self) -> None:
        await self.redis.aclose()
        if "sync_redis" in self.__dict__:
            self.sync_redis.close()
        if self.embedded is not None:
            self.embedded.stop()

    async def user_state(
        self, versions: Sequence[str], user_id: str, charge: Charge | None = None
    ) -> tuple[list[np.ndarray | None], set[str]]:
        """The user's vector of each model version of ``versions`` and played track ids, with the request's
        rate-limit ``charge`` counted, all in one round trip: the hot path pays Redis latency once (on a
        cluster, where those keys live in several slots, one pipeline per node, sent concurrently).
        Exposures of earlier responses ride along in the same round trip. Raises the 429 past the limit,
        and RedisUnavailable (at once while the breaker is open; the charge is then still unsettled)."""
        if not self.breaker.available:
            raise RedisUnavailable("redis unavailable (recent failure)")
        commands = [("GET", self.keys.user_vector(v, user_id)) for v in versions] + [
            ("ZRANGE", self.keys.user_played(user_id), 0, -1)
        ]
        reads = commands + (self.rate_limits.commands(charge) if charge is not None and not charge.settled else [])
        exposures = self.exposures.take()  # earlier responses' exposures ride along: no round trip of their own
        try:
            replies = await self._round_trip(reads + self.exposures.commands(exposures), must_answer=len(commands))
        except REDIS_ERRORS as exc:
            self.exposures.give_back(exposures)
            self.breaker.failed()
            raise RedisUnavailable(f"redis unavailable ({type(exc).__name__})") from exc
        _count_lost(replies[len(reads) :])
        if len(reads) > len(commands):
            self.rate_limits.enforce(charge, replies[len(reads) - 1])
        played = replies[len(versions)]
        vectors = [None if raw is None else np.frombuffer(raw, dtype=np.float32) for raw in replies[: len(versions)]]
        return vectors, {t.decode() for t in played}

    async def _round_trip(self, commands: list[tuple], must_answer: int = 0) -> list:
        """Send ``commands`` and read their replies; a refused command's reply is its ResponseError,
        unless it is one of the first ``must_answer`` (reads the caller needs), then it is raised."""
        send = self._cluster_round_trip if is_cluster(self.redis) else self._node_round_trip
        replies = await send(commands)
        refused = [r for r in replies[:must_answer] if isinstance(r, redis.ResponseError)]
        if refused:
            raise refused[0]
        return replies

    async def _node_round_trip(self, commands: list[tuple]) -> list:
        """One server: ``commands`` in one write on a pooled connection, then their replies: what a
        redis-py pipeline does, without its per-command bookkeeping (measured: 150 instead of 237 us
        of CPU for the hot path's four commands). A connection left mid-reply is closed, never reused."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection()
        try:
            return await _exchange(connection, commands)
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def _cluster_round_trip(self, commands: list[tuple]) -> list:
        """A cluster: the commands' keys live in several slots (the rate-limit counter, the user's keys,
        the feedback stream), so they go as one pipeline per node owning them, each written at once as on
        one server, all sent concurrently: the request waits for one round trip, to the slowest of those
        nodes. Commands refused with MOVED or ASK (slots being moved) go again through redis-py's cluster
        pipeline, which follows the redirect and refreshes the slot map; a lost connection makes the
        client read the map afresh on its next use (a failover moves slots to another node)."""
        client = self.redis
        await client.initialize()  # a no-op once the slot map is read
        by_node: dict = defaultdict(list)
        for i, command in enumerate(commands):
            by_node[client.get_node_from_key(command[1])].append(i)
        replies: list = [None] * len(commands)

        async def send(node, indices: list[int]) -> None:
            connection = node.acquire_connection()
            try:
                for i, reply in zip(indices, await _exchange(connection, [commands[i] for i in indices])):
                    replies[i] = reply
            except BaseException:
                await connection.disconnect()
                raise
            finally:
                node.release(connection)

        try:
            await asyncio.gather(*(send(node, indices) for node, indices in by_node.items()))
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            await client.aclose()
            raise
        moved = [
            i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.AskError)
        ]  # MovedError is an AskError
        if moved:
            pipe = client.pipeline(transaction=False)
            for i in moved:
                pipe.execute_command(*commands[i])
            for i, reply in zip(moved, await pipe.execute(raise_on_error=False)):
                if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                    raise reply
                replies[i] = reply
        return replies

    async def flush_exposures(self) -> None:
        """Send the exposures no request carried (idle traffic), and note whether the stream is at its
        safety cap (then exposures are dropped, like client events are refused)."""
        if not self.breaker.available:
            return
        exposures = self.exposures.take(limit=1000)
        health = self.version_health.take_commands(self.keys)  # lost with Redis down: figures, not feedback
        try:
            # the stream's length and the append script's memory verdict: refused client events mean dropped exposures
            replies = await self._round_trip(
                [
                    ("XLEN", self.keys.feedback_stream()),
                    ("GET", self.keys.feedback_memory_full()),
                    *self.exposures.commands(exposures),
                    *health,
                ],
                must_answer=2,
            )
        except REDIS_ERRORS:
            self.exposures.give_back(exposures)
            self.breaker.failed()
            return
        self.exposures.stream_full = int(replies[0]) >= self.settings.feedback_stream_cap or replies[1] == b"1"
        _count_lost(replies[2 : 2 + len(exposures)])

    async def _round_trip_or_none(self, commands: list[tuple]) -> list | None:
        """The replies of ``commands``, or None when Redis is unavailable (the breaker is then open)."""
        if not self.breaker.available:
            return None
        try:
            return await self._round_trip(commands)
        except REDIS_ERRORS:
            self.breaker.failed()
            return None


async def _exchange(connection, commands: list[tuple]) -> list:
    """Write ``commands`` at once on ``connection`` and read their replies (a refused command's reply is
    its ResponseError, read whole, so the connection stays usable)."""
    await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
    replies = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except redis.ResponseError as exc:  # one command refused (a full Redis refusing a write)
            replies.append(exc)
    return replies


def _retag_versions(store) -> None:
    """Rename versions published before their artefacts carried a hash tag (an install upgraded in place
    keeps serving them); a Redis that is down now is left to the pipeline's next release."""
    vectors = store()
    try:
        vectors.retag_versions()
    except REDIS_ERRORS as exc:
        log.warning("could not check for untagged model versions: %s", exc)
    finally:
        vectors.r.close()


def _count_lost(replies: list) -> None:
    lost = sum(isinstance(r, redis.ResponseError) for r in replies)
    if lost:
        EXPOSURES_LOST.labels("redis_error").inc(lost)


async def flush_exposures_forever(state: AppState, every: float = FLUSH_SECONDS) -> None:
    """Send waiting exposures every ``every`` seconds (runs for the app's lifetime; never raises)."""
    while True:
        await asyncio.sleep(every)
        try:
            await state.flush_exposures()
        except Exception:  # noqa: BLE001 (a bug here must not stop the next rounds)
            log.exception("flushing exposures failed; the next round tries again")
