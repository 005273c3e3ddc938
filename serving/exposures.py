"""The exposures the API records: one feedback-stream entry per list it served (field ``l``, see
:mod:`serving.served_lists`), for all traffic.

Recording costs no round trip of its own: a served list waits in this process's buffer and rides
along with the next request's reads (the hot path's single round trip), or with a flush every
``FLUSH_SECONDS`` when traffic is idle. A process that dies loses at most that moment's buffer
(exposures are the server's own observations, not accepted feedback). The buffer is bounded; past
its bound, and while the stream is at its safety cap, exposures are dropped and counted.
"""

from __future__ import annotations

from collections import deque

from core.contracts.served_lists import EXPOSURE_FIELD, ServedList
from serving.observability import EXPOSURES_LOST

FLUSH_SECONDS = 0.2
MAX_PENDING = 10_000


class ExposureBuffer:
    def __init__(self, stream_key: str, max_pending: int = MAX_PENDING) -> None:
        self.stream_key = stream_key
        self.max_pending = max_pending
        self.stream_full = False  # set by the flusher from the stream's length
        self._pending: deque[bytes] = deque()

    def record(self, served: ServedList) -> None:
        if self.stream_full:
            EXPOSURES_LOST.labels("stream_full").inc()
            return
        if len(self._pending) >= self.max_pending:
            EXPOSURES_LOST.labels("buffer_full").inc()
            self._pending.popleft()
        self._pending.append(served.payload())

    def take(self, limit: int = 100) -> list[bytes]:
        """Up to ``limit`` waiting exposures, oldest first (give them back with :meth:`give_back` if
        they could not be sent)."""
        taken = []
        while self._pending and len(taken) < limit:
            taken.append(self._pending.popleft())
        return taken

    def give_back(self, payloads: list[bytes]) -> None:
        for payload in reversed(payloads):
            if len(self._pending) >= self.max_pending:
                EXPOSURES_LOST.labels("buffer_full").inc()
                return
            self._pending.appendleft(payload)

    def commands(self, payloads: list[bytes]) -> list[tuple]:
        return [("XADD", self.stream_key, "*", EXPOSURE_FIELD, payload) for payload in payloads]

    def __len__(self) -> int:
        return len(self._pending)
