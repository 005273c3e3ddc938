"""The feedback worker's stream side: the consumer group, reading, reclaiming, dead letters, acks."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis

from core.contracts.redis_keys import RedisKeys
from core.vectorstore import VectorStore
from models.online_update import ONLINE_BOOST
from serving.worker.counting import EventCounter
from serving.worker.events import Event, parse_entry, stream_id_of
from serving.worker.online_learning import OnlineLearner
from serving.worker.served_model import ServedModel, load_served_model
from serving.worker.user_state import UserStateStore

log = logging.getLogger(__name__)

GROUP = "workers"


class FeedbackWorker:
    """One consumer of the feedback stream's ``GROUP``: reads batches and learns from them (the package
    docstring lists the steps), against the model version the ``champion`` alias points at."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        consumer: str | None = None,
        batch: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        latency_log: Path | None = None,
        online_boost: float = ONLINE_BOOST,
    ) -> None:
        self.r = client
        self.keys = keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch, self.block_ms = batch, block_ms
        self.online_boost = online_boost
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.store = VectorStore(client, keys)
        self.served: ServedModel | None = None
        self.learner = OnlineLearner(UserStateStore(client, keys), latency_log)
        self.counter = EventCounter(client, keys)
        self._checked_model = 0.0
        self._claimed_at = 0.0

    # --- setup ---------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:  # from the start of the stream: entries accepted before any worker ran are learnt too
            self.r.xgroup_create(self.keys.feedback_stream(), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def refresh_model(self, force: bool = False) -> ServedModel | None:
        """Follow the champion alias (checked at most every second)."""
        if not force and time.monotonic() - self._checked_model < 1.0:
            return self.served
        self._checked_model = time.monotonic()
        version = self.store.alias("champion")
        if version is None or (self.served is not None and self.served.version == version):
            return self.served
        served = load_served_model(self.store, version)
        if served is None:
            log.warning("model version %s was published without a fold-in: no online learning for it", version)
            return self.served
        self.served = served
        log.info("learning online against model version %s", version)
        return self.served

    # --- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, riding out Redis restarts (unacknowledged entries stay
        pending in the group, so nothing read before an outage is lost)."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.ensure_group()
                while not stop.is_set():
                    self.step()
                    backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def step(self) -> int:
        """One read-process-acknowledge round (plus, now and then, reclaiming stale entries)."""
        self.refresh_model()
        processed = 0
        if time.monotonic() - self._claimed_at > 5.0:
            self._claimed_at = time.monotonic()
            processed += self.reclaim()
        reply = self.r.xreadgroup(GROUP, self.consumer, {self.keys.feedback_stream(): ">"}, count=self.batch, block=self.block_ms)
        for _, entries in reply or []:
            processed += self.process(entries)
        return processed

    def reclaim(self) -> int:
        """Take over entries other consumers read but never acknowledged (crashed workers)."""
        stream = self.keys.feedback_stream()
        # Redis 7 also returns the ids of entries deleted meanwhile; 6.2 returns them with no fields
        entries = self.r.xautoclaim(stream, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch)[1]
        if not entries:
            return 0
        ids = [entry_id for entry_id, _ in entries]
        details = self.r.xpending_range(stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) + 100, consumername=self.consumer)
        deliveries = {d["message_id"]: d["times_delivered"] for d in details}
        poison = {i for i, f in entries if f and deliveries.get(i, 0) > self.max_deliveries}
        for entry_id, fields in entries:
            if entry_id in poison:
                self._dead_letter(entry_id, fields, f"delivered {deliveries[entry_id]} times without being acknowledged")
        gone = [i for i, f in entries if not f]  # trimmed after it was read: nothing left to apply
        if gone:
            self.r.xack(stream, GROUP, *gone)
        healthy = [(i, f) for i, f in entries if f and i not in poison]
        log.info("reclaimed %d pending entries (%d dead-lettered)", len(entries), len(poison))
        return self.process(healthy) + len(poison) + len(gone)

    def process(self, entries: list[tuple[bytes, dict]]) -> int:
        """Apply, count and acknowledge a batch of stream entries. Returns how many were handled."""
        events: list[Event] = []
        for entry_id, fields in entries:
            stream_id = stream_id_of(entry_id)
            try:
                events.append(parse_entry(stream_id, fields))
            except (KeyError, ValueError, TypeError) as exc:
                self._dead_letter(entry_id, fields, f"{type(exc).__name__}: {exc}")
        if events:
            self._apply_users(events)
            self.counter.count_applied(events)
        if entries:
            self.r.xack(self.keys.feedback_stream(), GROUP, *[entry_id for entry_id, _ in entries])
        return len(entries)

    def _apply_users(self, events: list[Event]) -> None:
        """Steps 1-3 (read, compute, store) for decoded events."""
        self.learner.apply(events, self.served, self.online_boost)

    def _dead_letter(self, entry_id, fields: dict, error: str) -> None:
        stream_id = stream_id_of(entry_id)
        log.warning("dead-lettering entry %s: %s", stream_id, error)
        payload = {b"entry": stream_id.encode(), b"error": error.encode()[:1000]}
        payload.update({b"field:" + key: value for key, value in (fields or {}).items()})
        self.r.xadd(self.keys.feedback_dead_letters(), payload)
        self.counter.count_dead_lettered(stream_id)
        self.r.xack(self.keys.feedback_stream(), GROUP, entry_id)
