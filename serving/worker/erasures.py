"""Who was erased, as the worker knows it: it drops their queued events and, should an erasure land
while a batch is being stored, deletes again what that batch wrote for them.

The API records an erasure in the offline log, then in Redis (the subject in ``erased_users`` and a
counter bump), then deletes the user's keys. The worker reads the counter before a batch (one GET) and
reloads the subjects only when it moved; after storing a batch it reads the counter again, and if an
erasure arrived meanwhile it deletes the keys of any of the batch's users it names. Either the API's
delete comes after the worker's write, or the worker sees the erasure: no vector is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from core.contracts.redis_keys import RedisKeys
from core.erasure_log import ErasureLog
from core.vectorstore import VectorStore


class ErasedSubjects:
    def __init__(self, client: redis.Redis, keys: RedisKeys, log: ErasureLog | None) -> None:
        self.r, self.keys, self.log = client, keys, log
        self._version: bytes | None = None
        self._subjects: set[str] = set()

    def refresh(self) -> bool:
        """Reload the subjects if the erasure counter moved. Returns whether it moved."""
        if self.log is None:
            return False
        version = self.r.get(self.keys.erasures_version())
        if version == self._version:
            return False
        self._version = version
        self._subjects = {s.decode() for s in self.r.hkeys(self.keys.erased_users())}
        return True

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
