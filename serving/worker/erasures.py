"""Who was erased, as the worker knows it: it drops their queued events and, should an erasure land
while a batch is being stored, deletes again what that batch wrote for them.

The API records an erasure in the offline log, then in Redis (the subject in ``erased_users`` and a
counter bump), then deletes the user's keys. The worker reads the counter before a batch (one GET) and
reloads the subjects only when it moved; after storing a batch it reads the counter again, and if an
erasure arrived meanwhile it deletes the keys of any of the batch's users it names. Either the API's
delete comes after the worker's write, or the worker sees the erasure: no vector is left behind.

Redis's copy is not the authority: an erasure requested while Redis was unreachable (the DELETE
answered 503) is only in the offline log. So the worker also reads the log, whenever the counter moved
and at least every :data:`LOG_EVERY_SECONDS`, and an event spooled for such a user and replayed later
is dropped (and any keys of the user it finds deleted) all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from core.vectorstore import VectorStore

logger = logging.getLogger(__name__)
LOG_EVERY_SECONDS = 5.0  # how stale the worker's reading of the offline log may get (one folder listing)


class ErasedSubjects:
    def __init__(
        self, client: redis.Redis, keys: RedisKeys, log: ErasureLog | None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.r, self.keys, self.log, self.clock = client, keys, log, clock
        self._version: bytes | None = None
        self._subjects: set[str] = set()
        self._cached: set[str] = set()  # Redis's copy, as last read
        self._logged: set[str] = set()  # the offline log's subjects, as last read
        self._log_read_at = float("-inf")

    def refresh(self) -> bool:
        """Reload the subjects if the erasure counter moved or the offline log is due a read (every
        :data:`LOG_EVERY_SECONDS`). Returns whether the erased subjects changed."""
        if self.log is None:
            return False
        version = self.r.get(self.keys.erasures_version())
        now = self.clock.monotonic()
        if version == self._version and now - self._log_read_at < LOG_EVERY_SECONDS:
            return False
        if version != self._version:
            self._cached = {s.decode() for s in self.r.hkeys(self.keys.erased_users())}
            self._version = version
        self._log_read_at = now
        try:
            self._logged = set(self.log.subjects())
        except Exception as exc:  # noqa: BLE001 (shared storage unreachable: Redis's copy and the last read hold)
            logger.warning("could not read the erasure log at %s: %s", self.log.folder, exc)
        subjects = self._cached | self._logged
        changed = subjects != self._subjects
        self._subjects = subjects
        return changed

    def erased(self, user_ids: Iterable[str]) -> set[str]:
        """The erased ones among ``user_ids`` (one keyed hash per distinct id, and only while anyone is erased)."""
        if not self._subjects or self.log is None:
            return set()
        return {u for u in set(user_ids) if self.log.digest(u) in self._subjects}

    def forget(self, user_ids: Iterable[str]) -> int:
        """Delete every key of ``user_ids`` (erased while their events were being stored). Returns keys deleted."""
        users = list(user_ids)
        if not users:
            return 0
        versions = VectorStore(self.r, self.keys).versions()
        pipe = self.r.pipeline(transaction=False)
        for user in users:
            pipe.execute_command(
                "DEL", *self.keys.user_keys(user, versions)
            )  # one slot ({u:<id>}); a cluster pipeline refuses delete()
        return sum(pipe.execute())
