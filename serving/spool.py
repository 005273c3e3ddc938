"""The local feedback spool: where accepted events wait while Redis is unavailable.

Each API process appends to its own file, one JSON event row per line, fsync'd before the request is
answered, so a 202 means the events are on disk. A replay task (in every API process) moves spooled
events into the stream once Redis answers again, through the same idempotent append script as the
API, so an event replayed twice (a crash mid-replay, two processes replaying) is appended once. A file
is deleted only after all its events are in the stream.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

REPLAY_BATCH = 500


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self.folder / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

    def append(self, rows: list[bytes]) -> None:
        """Durably append encoded event rows (one batch, one fsync)."""
        with open(self._path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(b"".join(row + b"\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("spool-*.jsonl"))

    def pending(self) -> int:
        """Events waiting in every spool file of this folder."""
        total = 0
        for path in self.files():
            with open(path, "rb") as handle:
                total += sum(1 for _ in handle)
        return total

    async def replay(self, append: Callable[[list[bytes]], Awaitable[None]]) -> int:
        """Send every spooled event through ``append`` (idempotent); delete each file once it is all
        in. Stops at the first failure (Redis gone again): the rest stays spooled. Returns events sent."""
        sent = 0
        for path in self.files():
            with open(path, "rb+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process is on it
                except BlockingIOError:
                    continue
                rows = [line.rstrip(b"\n") for line in handle if line.strip()]
                for start in range(0, len(rows), REPLAY_BATCH):
                    await append(rows[start : start + REPLAY_BATCH])
                    sent += len(rows[start : start + REPLAY_BATCH])
                path.unlink()  # still holding the lock: nobody appends to a file being removed
        if sent:
            log.info("replayed %d spooled feedback events into the stream", sent)
        return sent


def event_id_of(row: bytes) -> str:
    return orjson.loads(row)["event_id"]
