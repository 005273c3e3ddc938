"""The feedback worker: learns from listening events in real time, effectively once.

It reads the feedback stream as a member of a Redis consumer group. For each batch:

1. **Read** each user's online state in one pipeline: revision, which model version the vector
   carries updates for, the vector, which of the events are already applied, the online scores of
   the events' tracks.
2. **Compute** the new vector against the fixed item vectors of the served (champion) version:
   ``user += Δweight * fold_in[track]`` per event (:mod:`models.foldin`), with the same grading as
   training (:mod:`models.weighting`). When the served version changed, the user is re-folded: the
   trained vector of the new version plus the user's events newer than that model's data.
3. **Store** each user's update with one script that first checks the revision read in step 1 (another
   worker got there first: read again) and that none of the events is applied yet, then marks them
   applied, writes the vector and the played set, all in the user's Redis slot.
4. **Count** the events (applied counter, per algorithm/variant aggregates) with a script that counts
   each event id once.
5. **Acknowledge** the entries. A crash anywhere before this leaves the entries pending; another
   worker reclaims them (XAUTOCLAIM) and steps 3-4 skip what was already done. Entries that cannot be
   decoded, or that crashed workers ``max_deliveries`` times, go to the dead-letter stream.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import redis

from core.contracts.events import EVENT_TYPES
from core.contracts.redis_keys import RedisKeys
from core.feedback_stream import decode
from core.vectorstore import VectorStore
from models.foldin import FoldIn
from models.weighting import event_contributions, online_weight

log = logging.getLogger(__name__)

GROUP = "workers"
DEDUPE_SECONDS = 7 * 24 * 3600
RECENT_EVENTS = 500
STREAMED = {"play", "track_completed", "track_skipped", "like"}  # tracks the user has heard: excluded from lists
# live events say more about what the listener wants now than the history the model learnt from: their
# fold-in weights are multiplied by this (3 skips of one genre then visibly move the next list)
ONLINE_BOOST = 3.0

# KEYS: revision, applied, online, recent, played, vector, folded
# ARGV: expected revision ('' = none yet), applied cutoff ms, version, vector bytes, refold flag, n events,
#       n * (event_id, accepted_ms, event_ms, track_id, contribution, played flag), [m, m * (track, score)]
APPLY_SCRIPT = """
local rev = redis.call('GET', KEYS[1]) or ''
if rev ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[6])
local base = 7
for k = 0, n - 1 do
  if redis.call('ZSCORE', KEYS[2], ARGV[base + k * 6]) then return -1 end
end
local refold = ARGV[5] == '1'
if refold then
  redis.call('DEL', KEYS[3])
  local at = base + n * 6
  local m = tonumber(ARGV[at])
  for k = 0, m - 1 do
    redis.call('HSET', KEYS[3], ARGV[at + 1 + 2 * k], ARGV[at + 2 + 2 * k])
  end
end
for k = 0, n - 1 do
  local b = base + k * 6
  redis.call('ZADD', KEYS[2], ARGV[b + 1], ARGV[b])
  if not refold then redis.call('HINCRBYFLOAT', KEYS[3], ARGV[b + 3], ARGV[b + 4]) end
  redis.call('LPUSH', KEYS[4], '[' .. ARGV[b + 2] .. ',"' .. ARGV[b + 3] .. '",' .. ARGV[b + 4] .. ']')
  if ARGV[b + 5] == '1' then redis.call('SADD', KEYS[5], ARGV[b + 3]) end
end
redis.call('LTRIM', KEYS[4], 0, %d)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if ARGV[4] ~= '' then redis.call('SET', KEYS[6], ARGV[4]) end
redis.call('SET', KEYS[7], ARGV[3])
redis.call('INCR', KEYS[1])
return n
""" % (RECENT_EVENTS - 1)

# KEYS: counted set of the day, counters, aggregates; ARGV: ttl, counter field, pairs (id, aggregate field or '')
COUNT_SCRIPT = """
local new = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    new = new + 1
    if ARGV[i + 1] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if new > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], new) end
return new
"""


@dataclass
class Served:
    """The model version whose user vectors the worker keeps current."""

    version: str
    index: dict[str, int]
    fold: FoldIn
    durations: pd.Series
    trained_until_ms: int


@dataclass
class Event:
    stream_id: str
    accepted_ms: int
    row: dict

    @property
    def user(self) -> str:
        return self.row["user_id"]


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


class FeedbackWorker:
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
        self.served: Served | None = None
        self._apply = client.register_script(APPLY_SCRIPT)
        self._count = client.register_script(COUNT_SCRIPT)
        self._latency = open(latency_log, "a") if latency_log else None  # noqa: SIM115 (kept open while running)
        self._checked_model = 0.0
        self._claimed_at = 0.0

    # --- setup ---------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:  # from the start of the stream: entries accepted before any worker ran are learnt too
            self.r.xgroup_create(self.keys.feedback_stream(), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def refresh_model(self, force: bool = False) -> Served | None:
        """Follow the champion alias (checked at most every second)."""
        if not force and time.monotonic() - self._checked_model < 1.0:
            return self.served
        self._checked_model = time.monotonic()
        version = self.store.alias("champion")
        if version is None or (self.served is not None and self.served.version == version):
            return self.served
        fold = self.store.fold_in(version)
        if fold is None:
            log.warning("model version %s was published without a fold-in: no online learning for it", version)
            return self.served
        published = self.store.load(version)
        ids = published.items["track_id"].astype(str)
        durations = pd.Series(pd.to_numeric(published.items.get("duration_ms"), errors="coerce").to_numpy(), index=ids)
        self.served = Served(version, {t: i for i, t in enumerate(ids)}, FoldIn(*fold), durations,
                             int(published.meta.get("trained_until", "0")))  # fmt: skip
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
            stream_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                row = decode(fields[b"e"])
                if row.get("type") not in EVENT_TYPES or not row.get("user_id") or not row.get("track_id") or not row.get("event_id"):
                    raise ValueError(f"not a feedback event: {str(row)[:200]}")
                events.append(Event(stream_id, int(stream_id.split("-")[0]), row))
            except (KeyError, ValueError, TypeError) as exc:
                self._dead_letter(entry_id, fields, f"{type(exc).__name__}: {exc}")
        if events:
            self._apply_users(events)
            self._count_events(events)
        if entries:
            self.r.xack(self.keys.feedback_stream(), GROUP, *[entry_id for entry_id, _ in entries])
        return len(entries)

    # --- step 1-3 --------------------------------------------------------------------------
    def _apply_users(self, events: list[Event]) -> None:
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user].append(event)
        contributions = event_contributions(
            pd.DataFrame([e.row for e in events]), self.served.durations if self.served else None
        )  # fmt: skip
        contribution = {id(e): float(c) for e, c in zip(events, contributions)}
        pending = dict(by_user)
        for _ in range(10):  # optimistic concurrency: users another worker touched meanwhile go again
            if not pending:
                return
            pending = self._apply_round(pending, contribution)
        raise RuntimeError(f"{len(pending)} users kept conflicting; their entries stay pending for another try")

    def _apply_round(self, users: dict[str, list[Event]], contribution: dict[int, float]) -> dict[str, list[Event]]:
        k, served = self.keys, self.served
        version = served.version if served else ""
        pipe = self.r.pipeline(transaction=False)
        for user, evs in users.items():
            pipe.get(k.user_revision(user))
            pipe.get(k.user_folded_version(user))
            pipe.get(k.user_vector(version, user) if served else k.user_vector("none", user))
            pipe.zmscore(k.user_applied_events(user), [e.row["event_id"] for e in evs])
            pipe.hmget(k.user_online_scores(user), [e.row["track_id"] for e in evs])
        replies = pipe.execute()
        refold_users = [u for i, u in enumerate(users) if served and (replies[i * 5 + 1] or b"").decode() != version]
        recent = {}
        if refold_users:
            pipe = self.r.pipeline(transaction=False)
            for user in refold_users:
                pipe.lrange(k.user_recent_events(user), 0, -1)
            recent = dict(zip(refold_users, pipe.execute()))

        writes = self.r.pipeline(transaction=False)
        order = []
        cutoff = str(int(time.time() * 1000) - DEDUPE_SECONDS * 1000)
        for i, (user, evs) in enumerate(users.items()):
            rev, _, raw_vector, applied, online = replies[i * 5 : i * 5 + 5]
            fresh = [e for e, score in zip(evs, applied) if score is None]
            if not fresh:
                continue
            vector, reset = b"", None
            if served is not None:
                if user in recent:
                    vector, reset = self._refold(user, raw_vector, recent[user], fresh, contribution)
                else:
                    vector = self._increment(raw_vector, evs, online, fresh, contribution)
            args = [(rev or b"").decode(), cutoff, version, vector, "1" if reset is not None else "0", len(fresh)]
            for e in fresh:
                ts = e.row.get("timestamp")
                event_ms = int(ts.timestamp() * 1000) if isinstance(ts, datetime) else e.accepted_ms
                args += [e.row["event_id"], e.accepted_ms, event_ms, e.row["track_id"], repr(contribution[id(e)]),
                         "1" if e.row["type"] in STREAMED else "0"]  # fmt: skip
            if reset is not None:
                args.append(len(reset))
                for track, score in reset.items():
                    args += [track, repr(score)]
            keys = [k.user_revision(user), k.user_applied_events(user), k.user_online_scores(user), k.user_recent_events(user),
                    k.user_played(user), k.user_vector(version, user) if served else k.user_vector("none", user),
                    k.user_folded_version(user)]  # fmt: skip
            self._apply(keys=keys, args=args, client=writes)
            order.append((user, fresh))
        results = writes.execute() if order else []
        now = time.time() * 1000
        conflicts = {}
        for (user, fresh), result in zip(order, results):
            if result == -1:
                conflicts[user] = users[user]
            elif self._latency is not None:
                self._latency.write("".join(f"{now - e.accepted_ms:.1f}\n" for e in fresh))
        if self._latency is not None:
            self._latency.flush()
        return conflicts

    def _increment(self, raw_vector, evs, online, fresh, contribution) -> bytes:
        served = self.served
        base = np.frombuffer(raw_vector, dtype=np.float32).copy() if raw_vector else served.fold.tail.copy()
        scores = {e.row["track_id"]: float(s) for e, s in zip(evs, online) if s is not None}
        deltas: dict[int, float] = defaultdict(float)
        for e in fresh:
            track = e.row["track_id"]
            old = scores.get(track, 0.0)
            new = old + contribution[id(e)]
            scores[track] = new
            row = served.index.get(track)
            if row is not None:
                deltas[row] += self.online_boost * float(online_weight(new) - online_weight(old))
        if deltas and base.shape[0] == served.fold.matrix.shape[1]:
            base = served.fold.update(base, np.fromiter(deltas, dtype=np.int64), np.fromiter(deltas.values(), dtype=np.float32))
        return base.astype(np.float32).tobytes()

    def _refold(self, user, raw_vector, recent: list[bytes], fresh, contribution) -> tuple[bytes, dict[str, float]]:
        """The trained vector of the new version plus every event newer than its data."""
        served = self.served
        base = np.frombuffer(raw_vector, dtype=np.float32).copy() if raw_vector else served.fold.tail.copy()
        scores: dict[str, float] = defaultdict(float)
        for entry in recent:
            event_ms, track, value = orjson.loads(entry)
            if event_ms > served.trained_until_ms:
                scores[track] += value
        for e in fresh:
            scores[e.row["track_id"]] += contribution[id(e)]
        rows, weights = [], []
        for track, score in scores.items():
            row = served.index.get(track)
            if row is not None:
                rows.append(row)
                weights.append(self.online_boost * float(online_weight(score)))
        if rows and base.shape[0] == served.fold.matrix.shape[1]:
            base = served.fold.update(base, np.array(rows), np.array(weights, dtype=np.float32))
        return base.astype(np.float32).tobytes(), dict(scores)

    # --- step 4 ------------------------------------------------------------------------------
    def _count_events(self, events: list[Event]) -> None:
        by_day: dict[str, list[str]] = defaultdict(list)
        for e in events:
            row = e.row
            field = f"{row.get('algorithm') or 'none'}|{row.get('variant') or 'none'}|{row['type']}"
            by_day[_day(e.accepted_ms)] += [row["event_id"], field]
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        for day, pairs in by_day.items():
            self._count(keys=[k.feedback_counted(day), k.feedback_counters(), k.feedback_aggregates()],
                        args=[DEDUPE_SECONDS + 86_400, "applied", *pairs], client=pipe)  # fmt: skip
        pipe.execute()

    def _dead_letter(self, entry_id, fields: dict, error: str) -> None:
        stream_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        log.warning("dead-lettering entry %s: %s", stream_id, error)
        payload = {b"entry": stream_id.encode(), b"error": error.encode()[:1000]}
        payload.update({b"field:" + key: value for key, value in (fields or {}).items()})
        k = self.keys
        self.r.xadd(k.feedback_dead_letters(), payload)
        self._count(keys=[k.feedback_counted(_day(int(stream_id.split("-")[0]))), k.feedback_counters(), k.feedback_aggregates()],
                    args=[DEDUPE_SECONDS + 86_400, "dead_lettered", f"dead:{stream_id}", ""])  # fmt: skip
        self.r.xack(k.feedback_stream(), GROUP, entry_id)
