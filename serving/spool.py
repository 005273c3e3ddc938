"""The local feedback spool: where accepted events wait while Redis is unavailable.

**Appending.** Each API process appends to its own file (``spool-<pid>-<random>.jsonl``), one JSON
event row per line, fsync'd (and for a new file its folder fsync'd) before the request is answered, so
a 202 means the events are on disk. The spool is bounded: a batch that would take the folder past
``max_bytes`` raises :class:`SpoolFull` and nothing of it is stored (the API answers 503).

**Replaying.** A replay task in every API process (one at a time per folder: ``replay.lock``) moves
spooled events into the stream once Redis answers again, through the same idempotent append script as
the API, so an event replayed twice (a crash mid-replay) is appended once. It first *claims* a file:
under the file's lock it renames it to ``replay-<random>.jsonl``. An append that opened the file just
before, and waited for the lock meanwhile, then finds that its name no longer leads to the file it
holds and opens the name again (a new file): nothing is ever appended to a file being replayed. A
claimed file is deleted only once all its events are in the stream. Lines that are not event rows (a
write torn by a crash) go to ``quarantine.jsonl`` and are counted, instead of stopping the replay.

**Counting.** What ``/metrics`` shows (:meth:`Spool.counts`) is kept in memory, per file: read from
disk once when the spool is opened, then updated by this process's appends, replays, erasures and
quarantines, so a scrape lists and reads no file. With several API processes on one folder, each
counts its own appends and the replays it ran; files another process replayed are forgotten at the
replay task's next look at the folder (:meth:`Spool.forget_gone`, once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from serving.observability import SPOOL_QUARANTINED

log = logging.getLogger(__name__)

REPLAY_BATCH = 500  # events per append script
READ_BYTES = 1 << 20  # a replay reads a claimed file this much at a time
QUARANTINE = "quarantine.jsonl"
QUARANTINE_MAX_BYTES = 64 << 20  # torn lines are rare; past this they are only counted and logged
FILE_MODE = 0o600  # events carry user ids: readable by the service's user only


class SpoolFull(Exception):
    """The spool is at its size cap; nothing of the batch was stored."""


@dataclass(frozen=True)
class SpoolCounts:
    """What the spool holds, as this process counts it (see the module docstring)."""

    pending: int  # events (lines) waiting to be replayed
    size_bytes: int  # bytes of those files
    quarantined_bytes: int  # bytes kept in the quarantine file


class Spool:
    """The spool files of one folder (one per Redis key prefix on a host)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path = self.folder / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._synced_inode: int | None = None  # the file whose folder entry is known to be on disk
        # lines and bytes per spool file, counted once from disk here and kept up to date after
        self._counted: dict[str, tuple[int, int]] = {path.name: _count_lines(path) for path in self.files()}
        self._quarantined = _size(self.folder / QUARANTINE)

    # --- appending ---------------------------------------------------------------------------
    def append(self, rows: list[bytes], max_bytes: int) -> None:
        """Durably append encoded event rows (one batch, one fsync). Raises SpoolFull when they would
        take the spool past ``max_bytes``, OSError when the disk refuses them (full, read-only); either
        way nothing of the batch stays in the file."""
        payload = b"".join(row + b"\n" for row in rows)
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)  # read: the last byte
            try:
                self._wait_for_lock(fd)
                if _still_named(fd, self._path):
                    self._write(fd, payload, max_bytes)
                    return
                # a replay claimed the file between our open and our lock: open the name again
            finally:
                os.close(fd)

    def _wait_for_lock(self, fd: int) -> None:
        """Block until this process holds the file's lock (a replay may be claiming it right now)."""
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _write(self, fd: int, payload: bytes, max_bytes: int) -> None:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload  # a torn line before ours stays a line of its own, not the head of our first row
        used = self.size()
        if used + len(payload) > max_bytes:
            raise SpoolFull(f"{used:,} of {max_bytes:,} bytes used, {len(payload):,} more needed")
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no torn batch left behind
            raise
        inode = os.fstat(fd).st_ino
        if inode != self._synced_inode:  # a new file: its name must survive a crash too
            _fsync_folder(self.folder)
            self._synced_inode = inode
            # the old one was claimed by a replay (maybe another process's); a file that is not empty
            # was rewritten by an erasure in another process: counted once from disk
            self._counted[self._path.name] = _count_lines(self._path) if size else (0, 0)
            if size:
                return
        lines, size_before = self._counted.get(self._path.name, (0, 0))
        self._counted[self._path.name] = (lines + payload.count(b"\n"), size_before + len(payload))

    # --- what is waiting ---------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Files waiting to be replayed: claimed ones (an interrupted replay) first."""
        return sorted(self.folder.glob("replay-*.jsonl")) + sorted(self.folder.glob("spool-*.jsonl"))

    def size(self) -> int:
        """Bytes waiting in every spool file of this folder (what ``max_bytes`` bounds)."""
        return sum(_size(path) for path in self.files())

    def pending(self) -> int:
        """Events (lines) waiting in every spool file of this folder, read from disk."""
        return sum(_count_lines(path)[0] for path in self.files())

    def quarantined_bytes(self) -> int:
        """Bytes of torn lines kept in the quarantine file (bounded by QUARANTINE_MAX_BYTES)."""
        return _size(self.folder / QUARANTINE)

    def forget_gone(self, present: list[Path]) -> None:
        """Stop counting files that are no longer in the folder (``present``: a listing the caller made
        anyway, e.g. the replay task's), such as those another process replayed."""
        names = {path.name for path in present}
        for name in [n for n in self._counted if n not in names]:
            self._counted.pop(name, None)

    def counts(self) -> SpoolCounts:
        """Events and bytes waiting and bytes quarantined, from this process's counters: no file is
        listed or read (what ``/metrics`` shows; :meth:`pending` and :meth:`size` read the disk)."""
        counted = list(self._counted.values())
        return SpoolCounts(sum(n for n, _ in counted), sum(b for _, b in counted), self._quarantined)

    # --- erasing -----------------------------------------------------------------------------
    def remove_user(self, user_id: str) -> int:
        """Remove every spooled event of ``user_id`` (GDPR erasure). Each file holding one is rewritten
        beside itself and renamed over it under its lock, while no replay runs: an appender that
        opened the old file sees the name moved and opens it again. Returns the events removed."""
        needle = orjson.dumps(user_id)
        lock = os.open(self.folder / "replay.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        removed = 0
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a replay in progress finishes first, none starts
            for path in self.files():
                removed += self._remove_from(path, user_id, needle)
        finally:
            os.close(lock)
        return removed

    def _remove_from(self, path: Path, user_id: str, needle: bytes) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_named(fd, path):
                return 0
            with open(fd, "rb", closefd=False) as handle:
                lines = handle.read().splitlines(keepends=True)
            kept = [line for line in lines if needle not in line or _user_of(line) != user_id]
            if len(kept) == len(lines):
                return 0
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                _write_all(out, b"".join(kept))
                os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, path)
            _fsync_folder(self.folder)
            if path.name in self._counted:  # another process's file it never counted stays uncounted
                self._counted[path.name] = (len(kept), sum(len(line) for line in kept))
            if path == self._path:
                self._synced_inode = os.stat(path).st_ino  # our file under a new inode, its lines counted above
            return len(lines) - len(kept)
        finally:
            os.close(fd)

    # --- replaying ---------------------------------------------------------------------------
    async def replay(self, append: Callable[[list[bytes]], Awaitable[None]]) -> int:
        """Send every spooled event through ``append`` (idempotent) and delete each file once it is all
        in; lines that are not event rows go to the quarantine file. Stops at the first failure of
        ``append`` (Redis gone again) and raises it: the rest stays spooled. Returns the events sent
        (0 when another process is replaying this folder)."""
        lock = await asyncio.to_thread(self._replay_lock)
        if lock is None:
            return 0
        sent = 0
        try:
            for path in await asyncio.to_thread(self.files):
                claimed = await asyncio.to_thread(self._claim, path)
                if claimed is not None:
                    sent += await self._replay_file(claimed, append)
        finally:
            os.close(lock)
        if sent:
            log.info("replayed %d spooled feedback events into the stream", sent)
        return sent

    def _replay_lock(self) -> int | None:
        fd = os.open(self.folder / "replay.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _claim(self, path: Path) -> Path | None:
        """Rename a spool file to a ``replay-`` name under its lock, so no append lands in it any more
        (a ``replay-`` file is claimed already). None when the file is gone."""
        if path.name.startswith("replay-"):
            return path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # an append in progress finishes first
            if not _still_named(fd, path):
                return None
            claimed = self.folder / f"replay-{uuid.uuid4().hex}.jsonl"
            os.rename(path, claimed)
            _fsync_folder(self.folder)
            # another process's file (never counted here) is counted now: the replay takes it off again
            self._counted[claimed.name] = self._counted.pop(path.name, None) or _count_lines(claimed)
            return claimed
        finally:
            os.close(fd)

    async def _replay_file(self, claimed: Path, append: Callable[[list[bytes]], Awaitable[None]]) -> int:
        sent, torn = 0, []
        with open(claimed, "rb") as handle:
            while lines := await asyncio.to_thread(handle.readlines, READ_BYTES):
                rows = []
                for line in lines:
                    if not line.strip():
                        continue
                    (rows if _is_event_row(line) else torn).append(line.rstrip(b"\n"))
                for start in range(0, len(rows), REPLAY_BATCH):
                    await append(rows[start : start + REPLAY_BATCH])
                sent += len(rows)
        # quarantined only once the whole file is in: an interrupted replay quarantines nothing twice
        await asyncio.to_thread(self._finish, claimed, torn)
        return sent

    def _finish(self, claimed: Path, torn: list[bytes]) -> None:
        if torn:
            self._quarantine(claimed, torn)
        claimed.unlink()
        _fsync_folder(self.folder)
        self._counted.pop(claimed.name, None)

    def _quarantine(self, source: Path, lines: list[bytes]) -> None:
        fd = os.open(self.folder / QUARANTINE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            room = QUARANTINE_MAX_BYTES - os.fstat(fd).st_size
            kept = []
            for line in lines:
                if len(line) + 1 > room:
                    break
                kept.append(line + b"\n")
                room -= len(line) + 1
            _write_all(fd, b"".join(kept))
            os.fsync(fd)
            self._quarantined = os.fstat(fd).st_size
        finally:
            os.close(fd)
        SPOOL_QUARANTINED.inc(len(lines))
        log.error(
            "quarantined %d spool lines of %s that are not event rows (torn writes?) in %s%s",
            len(lines),
            source.name,
            self.folder / QUARANTINE,
            ""
            if len(kept) == len(lines)
            else f"; the quarantine is full, {len(lines) - len(kept)} of them were not kept",
        )


def _is_event_row(line: bytes) -> bool:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(row, dict) and isinstance(row.get("event_id"), str) and bool(row["event_id"])


def _user_of(line: bytes) -> str | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return row.get("user_id") if isinstance(row, dict) else None


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still leads to the open file ``fd`` (not renamed or deleted since it was opened)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a created, renamed or deleted file) survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_lines(path: Path) -> tuple[int, int]:
    """Lines and bytes of a spool file (0, 0 when it is gone)."""
    lines = size = 0
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
