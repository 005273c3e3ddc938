"""The feedback worker's stream side: the consumer group, reading, reclaiming, dead letters, acks, and
the loop that keeps it running through Redis outages and bad entries."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from core.redis_clients import is_cluster
from core.vectorstore import VectorStore
from experiments.store import served_versions
from models.online_update import ONLINE_BOOST
from serving.worker.carry_over import CarryOver
from serving.worker.connection import BLOCK_MS, is_transient
from serving.worker.counting import EventCounter, Handled
from serving.worker.erasures import ErasedSubjects
from serving.worker.events import Event, Exposure, parse_entry, stream_id_of
from serving.worker.heartbeat import Heartbeat
from serving.worker.metrics import WorkerMetrics
from serving.worker.online_learning import ConflictingUpdates, OnlineLearner
from serving.worker.served_model import ServedModel, load_served_model
from serving.worker.user_state import UserStateStore

log = logging.getLogger(__name__)

GROUP = "workers"
MAX_BACKOFF_SECONDS = 5.0


class FeedbackWorker:
    """One consumer of the feedback stream's ``GROUP``: reads batches and learns from them (the package
    docstring lists the steps), against the model version the ``champion`` alias points at."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        consumer: str | None = None,
        batch: int = 500,
        block_ms: int = BLOCK_MS,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        latency_log: Path | None = None,
        online_boost: float = ONLINE_BOOST,
        clock: Clock = SYSTEM_CLOCK,
        erasure_log: ErasureLog | None = None,
    ) -> None:
        _check_socket_timeout(client, block_ms)
        self.r = client
        self.keys = keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch, self.block_ms = batch, block_ms
        self.online_boost = online_boost
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.store = VectorStore(client, keys)
        self.served: ServedModel | None = None  # the champion
        self.others: list[ServedModel] = []  # other versions running experiments serve: every arm learns
        self.learner = OnlineLearner(UserStateStore(client, keys), latency_log)
        self.counter = EventCounter(client, keys, clock, GROUP)
        self.clock = clock
        self.heartbeat = Heartbeat(client, keys, self.consumer, clock)
        # erased users' queued events are dropped; None (no offline store at hand, e.g. some tests): not checked
        self.erasures = ErasedSubjects(client, keys, erasure_log, clock)
        self.carry_over = CarryOver(
            self.learner, self.erasures, online_boost
        )  # a new champion starts from users' online state
        self._checked_model = float("-inf")
        self._claimed_at = float("-inf")
        self._group_ready = False
        self._unfinished: list[tuple[bytes, dict]] = []  # a batch Redis interrupted: processed first next round
        self.metrics = WorkerMetrics(self, GROUP)  # its registry: served by `echotune worker` (serving.worker.metrics)

    # --- setup ---------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:  # from the start of the stream: entries accepted before any worker ran are learnt too
            self.r.xgroup_create(self.keys.feedback_stream(), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def refresh_model(self, force: bool = False) -> ServedModel | None:
        """Follow the champion alias, and the model versions running experiments serve (checked at most
        every second)."""
        if not force and self.clock.monotonic() - self._checked_model < 1.0:
            return self.served
        self._checked_model = self.clock.monotonic()
        champion = self.store.alias("champion")
        if champion is not None:
            self.served = self._load(champion, self.served) or self.served
        wanted = [v for v in served_versions(self.r, self.keys, self.store) if v != champion]
        loaded = {m.version: m for m in self.others}
        others = [m for v in wanted if (m := self._load(v, loaded.get(v))) is not None]
        if [m.version for m in others] != [m.version for m in self.others]:
            log.info(
                "learning online also against model versions %s (served by running experiments)",
                [m.version for m in others] or "none",
            )
        self.others = others
        return self.served

    def _load(self, version: str, current: ServedModel | None) -> ServedModel | None:
        """``current`` when it is ``version`` at its catalog revision, else ``version`` loaded (None when
        it was published without a fold-in: no online learning for it)."""
        if (
            current is not None
            and current.version == version
            and current.catalog_revision == self.store.catalog_revision(version)
        ):
            return current
        served = load_served_model(self.store, version)
        if served is None:
            log.warning("model version %s was published without a fold-in: no online learning for it", version)
        elif current is None or current.version != version:
            log.info("learning online against model version %s", version)
        return served

    # --- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; no error ends the loop. Redis being unavailable (down, a dead
        connection, read-only after a failover, out of memory, unable to persist, busy with a script)
        and any other failure are logged and the round is retried with backoff (0.1 s doubling to 5 s).
        A batch read but not finished is processed first on the next round (its entries stay pending in
        the group meanwhile), so nothing read before an outage is lost. On the way out the worker's
        heartbeat is removed."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    self.step()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 (the loop must outlive any one error; it is logged)
                    failures += 1
                    self.metrics.failed_rounds.inc()
                    delay = min(0.1 * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                    _log_failure(exc, delay)
                    self._group_ready = False  # a restarted Redis without its data has no group
                    stop.wait(delay)
        finally:
            self.heartbeat.leave()

    def step(self) -> int:
        """One round: heartbeat, the batch a failure interrupted (if any), now and then reclaiming stale
        entries, then read-process-acknowledge, then a page of users carried into a newly served
        champion (:mod:`.carry_over`). Returns the entries handled. Raises what Redis raised (the caller
        retries)."""
        self.heartbeat.beat()
        if not self._group_ready:
            self.ensure_group()
        self.refresh_model()
        processed = 0
        if self._unfinished:
            entries, self._unfinished = self._unfinished, []
            processed += self.process(entries)
        if self.clock.monotonic() - self._claimed_at > 5.0:
            self._claimed_at = self.clock.monotonic()
            processed += self.reclaim()
        carrying = self.carry_over.pending(self.served)  # no wait for entries while users are to be carried over
        reply = self.r.xreadgroup(
            GROUP,
            self.consumer,
            {self.keys.feedback_stream(): ">"},
            count=self.batch,
            block=None if carrying else self.block_ms,
        )
        for _, entries in reply or []:
            processed += self.process(entries)
        if carrying:
            self.carry_over.step(self.served, self.others)
        return processed

    def reclaim(self) -> int:
        """Take over entries other consumers read but never acknowledged (crashed workers)."""
        stream = self.keys.feedback_stream()
        # Redis 7 also returns the ids of entries deleted meanwhile; 6.2 returns them with no fields
        entries = self.r.xautoclaim(stream, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch)[
            1
        ]
        if not entries:
            return 0
        ids = [entry_id for entry_id, _ in entries]
        details = self.r.xpending_range(
            stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) + 100, consumername=self.consumer
        )
        deliveries = {d["message_id"]: d["times_delivered"] for d in details}
        poison = {i for i, f in entries if f and deliveries.get(i, 0) > self.max_deliveries}
        for entry_id, fields in entries:
            if entry_id in poison:
                self._dead_letter(
                    entry_id, fields, f"delivered {deliveries[entry_id]} times without being acknowledged"
                )
        gone = [i for i, f in entries if not f]  # trimmed after it was read: nothing left to apply
        if gone:
            self.r.xack(stream, GROUP, *gone)
        healthy = [(i, f) for i, f in entries if f and i not in poison]
        log.info("reclaimed %d pending entries (%d dead-lettered)", len(entries), len(poison))
        return self.process(healthy) + len(poison) + len(gone)

    def process(self, entries: list[tuple[bytes, dict]]) -> int:
        """Apply, count and acknowledge a batch of stream entries. Returns how many were handled.

        Entries that cannot be decoded are dead-lettered. When the batch fails for a reason of its own
        (an event that breaks the maths, a user whose keys hold the wrong type), its entries are tried
        one by one and only those that fail alone are dead-lettered, with their error. When Redis is
        unavailable the error is raised and the batch is kept for the next :meth:`step`."""
        started = time.perf_counter()
        try:
            handled = self._process(entries)
        except Exception:
            self._unfinished = list(entries)
            raise
        if entries:
            self.metrics.batch_done(len(entries), time.perf_counter() - started)
        return handled

    def _process(self, entries: list[tuple[bytes, dict]]) -> int:
        decoded: list[tuple[bytes, dict, Event]] = []
        exposures: list[Exposure] = []
        for entry_id, fields in entries:
            try:
                parsed = parse_entry(stream_id_of(entry_id), fields)
            except (KeyError, ValueError, TypeError) as exc:
                self._dead_letter(entry_id, fields, f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(parsed, Exposure):
                exposures.append(parsed)
            else:
                decoded.append((entry_id, fields, parsed))
        handled: list[Handled] = self._exposures(exposures)
        try:
            handled += self._learn([event for _, _, event in decoded])
        except Exception as exc:
            if _retry_later(exc):
                raise
            log.warning(
                "a batch of %d events failed (%s: %s); applying them one by one", len(decoded), type(exc).__name__, exc
            )
            handled += self._learn_one_by_one(decoded)
        if handled:
            counted = self.counter.acknowledge(handled)
            self.metrics.applied.inc(counted.get("applied", 0))
        return len(entries)

    def _exposures(self, exposures: list[Exposure]) -> list[Handled]:
        """Exposures are counted (one ``recommendation_shown`` per track, under the list's labels) and
        change no user state: what a user was shown is not what they listened to. Lists of users erased
        since are acknowledged uncounted."""
        if not exposures:
            return []
        self.erasures.refresh()
        erased = self.erasures.erased(e.user for e in exposures)
        fields = self.counter.exposure_fields([e.served for e in exposures])
        return [
            Handled(e.stream_id, "")
            if e.user in erased
            else Handled(e.stream_id, "exposures", events=len(e.served.tracks), fields=f)
            for e, f in zip(exposures, fields)
        ]

    def _learn(self, events: list[Event]) -> list[Handled]:
        """Steps 1-3 (read, compute, store) for decoded events, and what to count for each: events of
        erased users are dropped, and an erasure that lands meanwhile is honoured after the store."""
        if not events:
            return []
        self.erasures.refresh()
        erased = self.erasures.erased(e.user for e in events)
        dropped = [e for e in events if e.user in erased]
        self.learner.user_state.forget(erased)  # nothing of an erased user stays in the worker's memory
        if dropped:
            events = [e for e in events if e.user not in erased]
            # and whatever an earlier event of theirs left (an erasure Redis never heard of: its DELETE got a 503)
            self.erasures.forget({e.user for e in dropped})
            log.info("dropped %d queued events of erased users", len(dropped))
        if events:
            self._apply_users(events)
            if self.erasures.refresh():  # an erasure arrived while the batch was stored
                erased = self.erasures.erased(e.user for e in events)
                self.erasures.forget(erased)
                self.learner.user_state.forget(erased)
        fields = self.counter.fields([e.row for e in events])
        return [Handled(e.stream_id, "dropped_erased") for e in dropped] + [
            Handled(e.stream_id, "applied", field, e.user) for e, field in zip(events, fields)
        ]

    def _learn_one_by_one(self, decoded: list[tuple[bytes, dict, Event]]) -> list[Handled]:
        """After a failed batch: each entry alone; the ones that still fail are dead-lettered."""
        handled: list[Handled] = []
        for entry_id, fields, event in decoded:
            try:
                handled += self._learn([event])
            except Exception as exc:
                if _retry_later(exc):
                    raise
                self._dead_letter(entry_id, fields, f"{type(exc).__name__}: {exc}")
        return handled

    def _apply_users(self, events: list[Event]) -> None:
        """Steps 1-3 (read, compute, store) for decoded events."""
        self.learner.apply(events, self.served, self.online_boost, self.others)

    def _dead_letter(self, entry_id, fields: dict, error: str) -> None:
        stream_id = stream_id_of(entry_id)
        log.warning("dead-lettering entry %s: %s", stream_id, error)
        payload = {b"entry": stream_id.encode(), b"error": error.encode()[:1000]}
        payload.update({b"field:" + key: value for key, value in (fields or {}).items()})
        self.r.xadd(self.keys.feedback_dead_letters(), payload)
        self.counter.acknowledge([Handled(stream_id, "dead_lettered")])
        self.metrics.dead_letters.inc()


def _retry_later(exc: BaseException) -> bool:
    """Whether a failed batch should wait for the next round whole (Redis unavailable, or other workers
    updating the same users) rather than be split to find a bad entry."""
    return is_transient(exc) or isinstance(exc, ConflictingUpdates)


def _log_failure(exc: Exception, delay: float) -> None:
    if _retry_later(exc):
        log.warning("redis unavailable or busy (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
    else:
        log.error("the worker's round failed; retrying in %.1fs", delay, exc_info=exc)


def _check_socket_timeout(client: redis.Redis, block_ms: int) -> None:
    options = client.get_connection_kwargs() if is_cluster(client) else client.connection_pool.connection_kwargs
    timeout = options.get("socket_timeout")
    if timeout is not None and timeout * 1000 <= block_ms:
        raise ValueError(
            f"the Redis client's socket_timeout ({timeout}s) must be longer than the blocking read ({block_ms} ms), "
            "or every read times out: build the client with serving.worker.connection.worker_client"
        )
