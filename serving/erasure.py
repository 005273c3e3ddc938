"""GDPR erasure, online half: ``DELETE /users/{id}`` and what keeps the user erased afterwards.

The request is recorded in the offline erasure log first (durable, the authority: see
:mod:`core.erasure_log`; by keyed digest, never by id) and the user's lines leave this host's spool
(neither needs Redis: a DELETE that answers 503 because Redis is down has done both). Then Redis: the
hash of erased subjects and its version counter (which the worker checks on every batch), and
everything of the user the online side holds: their keys (vectors of every model version, played
tracks, online learning state) and their entries still in the feedback and dead-letter streams. Each
step adds a receipt entry. From then on the API refuses their events (:class:`ErasedUsers`), the
worker drops any still queued, spool and dead-letter replays drop theirs, and every offline writer
leaves their rows out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aredis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from serving.spool import Spool

logger = logging.getLogger(__name__)
STREAM_PAGE = 5_000


@dataclass
class ErasedUsers:
    """Who was erased, as this API process knows it: the offline log and Redis's copy, re-read every
    ``refresh_seconds`` (erasures are rare; between two reads the worker's check still holds)."""

    log: ErasureLog
    client: aredis.Redis
    keys: RedisKeys
    refresh_seconds: float = 2.0
    clock: Clock = SYSTEM_CLOCK
    _known: dict[str, float] = field(default_factory=dict)
    _checked: float = float("-inf")

    async def refresh(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        try:
            known = await asyncio.to_thread(self.log.subjects)
        except Exception as exc:  # shared storage unreachable: what was read before and Redis's copy still hold
            logger.warning("could not read the erasure log at %s: %s", self.log.folder, exc)
            known = dict(self._known)
        try:
            cached = await self.client.hgetall(self.keys.erased_users())
        except (aredis.RedisError, OSError):  # the offline log alone still says who is erased
            cached = {}
        self._known = {**{k.decode(): float(v) for k, v in cached.items()}, **known}

    def add(self, subject: str, at: float) -> None:
        self._known.setdefault(subject, at)

    def erased_at(self, user_id: str) -> float | None:
        """When ``user_id`` was erased, or None (one HMAC, and only while anyone is erased at all)."""
        return self._known.get(self.log.digest(user_id)) if self._known else None


async def erase_online(
    client: aredis.Redis, keys: RedisKeys, log: ErasureLog, user_id: str, spool: Spool, clock: Clock = SYSTEM_CLOCK
) -> float:
    """Erase ``user_id`` from everything online (see the module docstring), recording each step in
    the receipt. The offline record is written first: if that fails, nothing is erased and the
    caller answers 503. Returns the time of the request."""
    subject = log.digest(user_id)
    at = await asyncio.to_thread(log.record_request, subject, clock.now())
    # the spool needs no Redis: emptied (and receipted) before anything that may fail while Redis is
    # down; another host's spool drops the user's events at replay (serving.feedback.append_unerased)
    spooled = await asyncio.to_thread(spool.remove_user, user_id)
    await asyncio.to_thread(
        log.append, subject, [("spool", spooled, f"this host's spool ({spool.folder})")], clock.now()
    )
    receipt: list[tuple[str, int | None, str | None]] = []
    versions = [v.decode() for v in await client.zrange(keys.models_index(), 0, -1)]
    # recorded before the keys go, in a round trip of its own: a worker storing the user's events after
    # the DEL then sees the new erasures version and deletes them again (on a cluster one pipeline's
    # commands to different nodes run in no set order)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.erased_users(), subject, str(at))
        pipe.incr(keys.erasures_version())
        await pipe.execute()
    deleted = await client.delete(*keys.user_keys(user_id, versions))  # one slot: {u:<id>}
    receipt.append(
        (
            "redis_online_state",
            int(deleted),
            f"user vectors of model versions {', '.join(versions) or 'none'}, played tracks, online learning state",
        )
    )
    receipt.append(
        (
            "feedback_stream",
            await _delete_entries(client, keys.feedback_stream(), user_id, fields=(b"e", b"l")),
            "accepted events and served lists not yet persisted",
        )
    )
    receipt.append(
        (
            "dead_letters",
            await _delete_entries(client, keys.feedback_dead_letters(), user_id, fields=(b"field:e", b"field:l")),
            "events the worker could not apply",
        )
    )
    await asyncio.to_thread(log.append, subject, receipt, clock.now())
    return at


async def _delete_entries(client: aredis.Redis, stream: str, user_id: str, fields: tuple[bytes, ...]) -> int:
    """XDEL every entry of ``stream`` whose event or served list (JSON in one of ``fields``) belongs to ``user_id``."""
    deleted, cursor = 0, "-"
    while True:
        page = await client.xrange(stream, min=cursor, max="+", count=STREAM_PAGE)
        if not page:
            return deleted
        doomed = [entry_id for entry_id, values in page if any(_user_of(values.get(f)) == user_id for f in fields)]
        if doomed:
            deleted += await client.xdel(stream, *doomed)
        if len(page) < STREAM_PAGE:
            return deleted
        cursor = "(" + page[-1][0].decode()


def _user_of(payload: bytes | None) -> str | None:
    if not payload:
        return None
    try:
        row = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return row.get("user_id") if isinstance(row, dict) else None


def receipt_body(user_id: str, log: ErasureLog) -> dict | None:
    """The receipt of ``user_id``'s erasure: when it was asked for and what was removed where."""
    entries = log.receipt(log.digest(user_id))
    requests = [e for e in entries if e.place == "request"]
    if not requests:
        return None
    return {
        "user_id": user_id,
        "requested_at": _iso(requests[0].at),
        "removed": [
            {"place": e.place, "count": e.removed, "detail": e.detail, "at": _iso(e.at)}
            for e in entries
            if e.place != "request"
        ],
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
