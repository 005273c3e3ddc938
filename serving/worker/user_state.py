"""Each user's online learning state in Redis: read in one pipeline (step 1), stored by one script (step 3).

A user's state is their revision, the model versions whose vectors carry online updates (the champion
and every version a running experiment serves, so every arm learns), those vectors, the ids of the events already applied (the dedupe window), their online score per track, their
recent events (for re-folding on a new version) and their played set, the last two bounded and all
of it only for tracks of the served catalog (any well-formed track id can be posted): all keys of
:class:`~core.contracts.redis_keys.RedisKeys` in the user's slot, so one script updates them together.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import orjson
import redis

from core.contracts.redis_keys import RedisKeys
from core.redis_clients import run_scripts
from core.vectorstore import PLAYED_CAP
from serving.worker.events import Event

DEDUPE_SECONDS = 7 * 24 * 3600
RECENT_EVENTS = 500

# One call per user reads what step 2 needs: five commands and, for a re-fold, a second round trip
# cost the worker more than the maths (redis-py's per-command overhead dominated the batch's profile).
# KEYS: revision, folded, applied, online, recent, vector, then the vector of each other version learnt
# ARGV: n events, v versions learnt, v * version, n * event_id, n * track_id
# Returns: revision, folded, n applied scores, n online scores, the recent events (or nil: every version
# learnt is in folded), vector, then the other versions' vectors (nil where a key is missing).
READ_SCRIPT = """
local n = tonumber(ARGV[1])
local v = tonumber(ARGV[2])
local folded = redis.call('GET', KEYS[2])
local ids, tracks = {}, {}
for k = 1, n do
  ids[k] = ARGV[2 + v + k]
  tracks[k] = ARGV[2 + v + n + k]
end
local recent = false
local have = ',' .. (folded or '') .. ','
for k = 1, v do
  if not string.find(have, ',' .. ARGV[2 + k] .. ',', 1, true) then
    recent = redis.call('LRANGE', KEYS[5], 0, -1)
    break
  end
end
local applied, scores = {}, {}
if n > 0 then  -- no events: a user re-folded into a new version (serving.worker.carry_over)
  applied = redis.call('ZMSCORE', KEYS[3], unpack(ids))
  scores = redis.call('HMGET', KEYS[4], unpack(tracks))
end
local out = {redis.call('GET', KEYS[1]), folded, applied, scores, recent}
for k = 6, #KEYS do out[k] = redis.call('GET', KEYS[k]) end
return out
"""

# KEYS: revision, applied, online, recent, played, vector, folded, then the vector of each other version learnt
# ARGV: expected revision ('' = none yet), applied cutoff ms, folded versions, vector bytes, refold flag, n events,
#       played cap, x (other versions), x * vector bytes, n * (event_id, accepted_ms, event_ms, track_id,
#       contribution, track flag), [m, m * (track, score)]
# track flag: '0' a track the served model does not have (the event is marked applied, nothing else:
# online state grows only with the served catalog), '1' a known track, '2' a known track the user heard
APPLY_SCRIPT = """
local rev = redis.call('GET', KEYS[1]) or ''
if rev ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[6])
local x = tonumber(ARGV[8])
local base = 9 + x
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
  local flag = ARGV[b + 5]
  if flag ~= '0' then
    if not refold then redis.call('HINCRBYFLOAT', KEYS[3], ARGV[b + 3], ARGV[b + 4]) end
    redis.call('LPUSH', KEYS[4], '[' .. ARGV[b + 2] .. ',"' .. ARGV[b + 3] .. '",' .. ARGV[b + 4] .. ']')
    if flag == '2' then redis.call('ZADD', KEYS[5], 'GT', ARGV[b + 2], ARGV[b + 3]) end
  end
end
redis.call('LTRIM', KEYS[4], 0, RECENT_LAST)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[7]) - 1)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if ARGV[4] ~= '' then redis.call('SET', KEYS[6], ARGV[4]) end
for k = 1, x do
  if ARGV[8 + k] ~= '' then redis.call('SET', KEYS[7 + k], ARGV[8 + k]) end
end
redis.call('SET', KEYS[7], ARGV[3])
redis.call('INCR', KEYS[1])
return n
""".replace("RECENT_LAST", str(RECENT_EVENTS - 1))
FOLDED_MAX = 16  # model versions a user's folded list remembers (retired ones fall off the front)
# users whose state a worker keeps after storing it, so their next batch skips step 1 (the store's
# revision check catches any change meanwhile); only states with at most KNOWN_SCORES_MAX online
# scores are kept: at most ~10,000 x 256 scores in memory
KNOWN_USERS = 10_000
KNOWN_SCORES_MAX = 256


@dataclass
class UserState:
    """One user's online state as read in step 1, for the events of one batch."""

    revision: str  # '' = never updated; step 3 stores only if it is still this
    folded: list[str]  # the model versions whose vectors carry this user's online updates, oldest first
    vector: np.ndarray | None  # float32, the user's vector of the served version (None: none stored)
    applied_event_ids: set[str]  # which of the batch's events are applied already
    online_scores: dict[str, float]  # online score of the batch's tracks that have one
    others: dict[str, np.ndarray | None] = field(default_factory=dict)  # their vector of each other version learnt
    # their remembered events (event ms, track, contribution), newest first, when a version learnt does
    # not carry their updates yet (a re-fold replays them); None when every version does
    recent: list[tuple[int, str, float]] | None = None
    complete: bool = False  # online_scores holds every track's score (a state this worker stored), not only the batch's

    @property
    def folded_version(self) -> str:
        """The newest version the user's online updates were folded into ('' = none)."""
        return self.folded[-1] if self.folded else ""


@dataclass
class UserUpdate:
    """What step 3 stores for one user."""

    user: str
    revision: str  # the revision read in step 1
    version: str  # the served model version ('' = none)
    vector: np.ndarray | None  # the new vector (None: no model served, no vector written)
    events: list[Event]  # the events applied: marked applied, remembered, their tracks played
    contributions: list[float]  # their score contributions, in order
    known: set[str] = field(default_factory=set)  # tracks of the served catalog: only they enter online state
    online_scores: dict[str, float] | None = None  # re-fold: replaces the online scores; else events add to them
    others: dict[str, np.ndarray] = field(default_factory=dict)  # new vectors of the other versions learnt
    folded: list[str] = field(default_factory=list)  # the versions whose vectors now carry the online updates
    scores_after: dict[str, float] | None = None  # every online score once stored, when known (the state is then kept)

    def folded_text(self) -> str:
        return ",".join(self.folded[-FOLDED_MAX:]) if self.folded else self.version


def _vector(raw: bytes | None) -> np.ndarray | None:
    return np.frombuffer(raw, dtype=np.float32).copy() if raw else None


class UserStateStore:
    """Reads and stores users' online state (keys from :class:`RedisKeys`, writes through APPLY_SCRIPT)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, played_cap: int = PLAYED_CAP) -> None:
        self.r = client
        self.keys = keys
        self.played_cap = played_cap
        self._read = client.register_script(READ_SCRIPT)
        self._apply = client.register_script(APPLY_SCRIPT)
        self.known: OrderedDict[str, tuple[str, UserState]] = OrderedDict()  # user -> (served version, state stored)

    def _vector_key(self, version: str, user: str) -> str:
        return self.keys.user_vector(version or "none", user)

    def read(
        self, version: str, users: Mapping[str, Sequence[Event]], others: Sequence[str] = ()
    ) -> dict[str, UserState]:
        """Step 1: the state of each user of ``users`` (user id -> their events in the batch), with their
        vector of model ``version`` ('' = none served) and of each of ``others``, and their remembered
        events when one of those versions does not carry their updates yet (a re-fold replays them), in
        one round trip: one READ_SCRIPT call per user, pipelined. Users whose state this store wrote last
        (as far as it knows) are not read: their state is the one kept (:attr:`known`)."""
        k = self.keys
        learnt = [version, *others] if version else []
        states = {user: state for user in users if (state := self._kept(user, version, others)) is not None}
        calls, unknown = [], {user: events for user, events in users.items() if user not in states}
        for user, events in unknown.items():
            keys = [
                k.user_revision(user),
                k.user_folded_version(user),
                k.user_applied_events(user),
                k.user_online_scores(user),
                k.user_recent_events(user),
                self._vector_key(version, user),
                *(self._vector_key(o, user) for o in others),
            ]
            args = [len(events), len(learnt), *learnt, *(e.event_id for e in events), *(e.track_id for e in events)]
            calls.append((self._read, keys, args))
        for (user, events), reply in zip(unknown.items(), run_scripts(self.r, calls)):
            revision, folded, applied, scores, recent, vector, *theirs = reply
            states[user] = UserState(
                revision=(revision or b"").decode(),
                folded=[v for v in (folded or b"").decode().split(",") if v],
                vector=_vector(vector),
                applied_event_ids={e.event_id for e, score in zip(events, applied) if score is not None},
                online_scores={e.track_id: float(s) for e, s in zip(events, scores) if s is not None},
                others={other: _vector(raw) for other, raw in zip(others, theirs)},
                recent=None if recent is None else [tuple(orjson.loads(entry)) for entry in recent],
            )
        return states

    def _kept(self, user: str, version: str, others: Sequence[str]) -> UserState | None:
        """The state this store wrote for ``user``, when it has everything step 2 needs: vectors of
        ``version`` and ``others``, all of them carrying the user's updates (else it must be read)."""
        kept = self.known.get(user)
        if kept is None or not version or kept[0] != version:
            return None
        state = kept[1]
        if not {version, *others} <= set(state.folded) or not set(others) <= state.others.keys():
            return None
        self.known.move_to_end(user)
        return UserState(
            state.revision,
            state.folded,
            state.vector,
            set(),
            state.online_scores,
            {o: state.others[o] for o in others},
            complete=True,
        )

    def users_with_events_after(self, event_ms: int) -> Iterator[str]:
        """Users whose newest remembered event happened after ``event_ms``: those a version trained on
        data up to then has not learnt everything from. Found by scanning the keyspace for their
        recent-events lists (SCAN: incremental, every node of a cluster) and reading each one's newest
        entry, a page at a time; lazily, so a caller can spread the work."""
        pattern = self.keys.user_recent_events("*")
        head, tail = pattern.split("*")
        keys = self.r.scan_iter(match=pattern, count=1000)
        while page := list(islice(keys, 500)):
            pipe = self.r.pipeline(transaction=False)
            for key in page:
                pipe.lindex(key, 0)
            for key, newest in zip(page, pipe.execute()):
                if newest is not None and orjson.loads(newest)[0] > event_ms:
                    name = key.decode() if isinstance(key, bytes) else key
                    yield name[len(head) : -len(tail)]

    def forget(self, users: Iterable[str]) -> None:
        """Drop the kept state of ``users`` (erased users: nothing of theirs stays in memory)."""
        for user in users:
            self.known.pop(user, None)

    def _keep(self, update: UserUpdate) -> None:
        """Keep the state ``update`` just stored, when all of it is known; else forget the user's."""
        if update.vector is None or update.scores_after is None or len(update.scores_after) > KNOWN_SCORES_MAX:
            self.known.pop(update.user, None)
            return
        revision = str(int(update.revision or 0) + 1)  # the script's INCR
        folded = update.folded_text().split(",")
        self.known[update.user] = (
            update.version,
            UserState(revision, folded, update.vector, set(), update.scores_after, dict(update.others)),
        )
        self.known.move_to_end(update.user)
        while len(self.known) > KNOWN_USERS:
            self.known.popitem(last=False)

    def write(self, updates: Sequence[UserUpdate]) -> list[bool]:
        """Step 3: stores each update with APPLY_SCRIPT, all in one pipeline (one per node on a cluster:
        each update's keys are the user's, in one slot). Returns, per update, whether
        it was stored: False when the user's revision moved or one of the events got applied since step
        1 (another worker got there first, or the state kept was stale: read again)."""
        if not updates:
            return []
        k = self.keys
        cutoff = str(int(time.time() * 1000) - DEDUPE_SECONDS * 1000)
        calls = []
        for update in updates:
            user, refold = update.user, update.online_scores is not None
            vector = b"" if update.vector is None else update.vector.astype(np.float32).tobytes()
            args = [
                update.revision,
                cutoff,
                update.folded_text(),
                vector,
                "1" if refold else "0",
                len(update.events),
                self.played_cap,
            ]
            args += [len(update.others), *(v.astype(np.float32).tobytes() for v in update.others.values())]
            for e, contribution in zip(update.events, update.contributions):
                flag = "0" if e.track_id not in update.known else "2" if e.played else "1"
                args += [e.event_id, e.accepted_ms, e.event_ms, e.track_id, repr(contribution), flag]
            if refold:
                args.append(len(update.online_scores))
                for track, score in update.online_scores.items():
                    args += [track, repr(score)]
            keys = [
                k.user_revision(user),
                k.user_applied_events(user),
                k.user_online_scores(user),
                k.user_recent_events(user),
                k.user_played(user),
                self._vector_key(update.version, user),
                k.user_folded_version(user),
                *(self._vector_key(other, user) for other in update.others),
            ]
            calls.append((self._apply, keys, args))
        stored = [result != -1 for result in run_scripts(self.r, calls)]
        for update, ok in zip(updates, stored):
            if ok:
                self._keep(update)
            else:
                self.known.pop(update.user, None)
        return stored
