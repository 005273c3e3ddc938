"""Event rows as parquet: the EVENT_SCHEMA table a writer hands over, its UTC day or month partitions,
and appending to a day's file page by page in memory bounded by the page.

A drain of a busy day may hold millions of events; decoded into Python rows they take ~1.35 KB each
(5M events: ~7 GB). :class:`EventAppender` takes them a page at a time: each day partition it touches
gets one new ``<part>.parquet``, streamed (the stored rows copied row group by row group, then the new
rows) and swapped in atomically when the appender commits; an exception leaves every stored file as it
was. An event whose id the partition already holds, or that the appender already took, is left out
(:class:`SeenIds`), so appending the same events twice stores them once.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.util import hash_array

from core.contracts.events import EVENT_SCHEMA
from core.storage import StoragePath, open_atomic, read_batches
from core.table_encryption import encryption_properties

if TYPE_CHECKING:
    from core.tables import OfflineStore

ROW_GROUP = 65_536  # rows buffered before they are written: ~15 MB of arrow buffers for live events


def as_event_table(events: pa.Table | pd.DataFrame) -> pa.Table:
    """``events`` in EVENT_SCHEMA; optional columns a writer does not have (older producers, the
    synthetic world) are null."""
    # safe=False: timestamps are stored at millisecond precision; sub-ms digits are dropped, not refused
    if isinstance(events, pa.Table):
        n = len(events)
        columns = [events[f.name] if f.name in events.column_names else pa.nulls(n, f.type) for f in EVENT_SCHEMA]
        return pa.Table.from_arrays(columns, names=EVENT_SCHEMA.names).cast(EVENT_SCHEMA, safe=False)
    return pa.Table.from_pandas(
        events.reindex(columns=EVENT_SCHEMA.names), schema=EVENT_SCHEMA, preserve_index=False, safe=False
    )


def partitions_of(table: pa.Table, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Partition of each row as an integer code, and the names ('YYYY-MM-DD' by day, 'YYYY-MM' by
    month) the codes index: integer arithmetic per row, string formatting once per partition."""
    unit = "D" if by == "day" else "M"
    stamps = table["timestamp"].cast(pa.int64()).to_numpy().astype("datetime64[ms]").astype(f"datetime64[{unit}]")
    unique, codes = np.unique(stamps, return_inverse=True)
    return codes, np.datetime_as_string(unique, unit=unit)


class SeenIds:
    """A set of event ids at 16 bytes an id (a Python set of the strings takes ~100): each id is kept
    as two 64-bit SipHash digests under different keys, and only an id matching both halves of a stored
    one counts as seen. Two different ids collide with probability ~n^2 / 2^129 (1e-26 for a 5M-event
    day), so no event is dropped as a false duplicate. The digests sit in sorted runs merged like a
    binary counter (each digest is re-sorted ~log2(n / page) times)."""

    _KEYS = ("echotune-ids-one", "echotune-ids-two")  # hash_array takes 16-character keys

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(first) for first, _ in self._runs)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are new (not seen before, and the first of their kind in ``ids``), as a
        boolean mask; the new ones are seen from now on."""
        ids = np.asarray(ids, dtype=object)
        if not len(ids):
            return np.zeros(0, dtype=bool)
        first, second = (hash_array(ids, hash_key=key, categorize=False) for key in self._KEYS)
        new = ~pd.Series(ids).duplicated().to_numpy()  # exact within the page
        for run_first, run_second in self._runs:
            new &= ~_member(run_first, run_second, first, second)
        self._add(first[new], second[new])
        return new

    def _add(self, first: np.ndarray, second: np.ndarray) -> None:
        order = np.argsort(first, kind="stable")
        run = (first[order], second[order])
        while self._runs and len(self._runs[-1][0]) <= len(run[0]):
            last = self._runs.pop()
            first, second = np.concatenate([last[0], run[0]]), np.concatenate([last[1], run[1]])
            order = np.argsort(first, kind="stable")  # two sorted runs: timsort merges them in linear time
            run = (first[order], second[order])
        if len(run[0]):
            self._runs.append(run)


def _member(run_first: np.ndarray, run_second: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Which (first, second) digest pairs a sorted run holds."""
    found = np.zeros(len(first), dtype=bool)
    if not len(run_first):
        return found
    at = np.searchsorted(run_first, first)
    candidates = np.flatnonzero(run_first[np.minimum(at, len(run_first) - 1)] == first)
    for k in candidates:  # only true duplicates, and the rare id sharing the first half, get here
        i = at[k]
        while i < len(run_first) and run_first[i] == first[k]:
            if run_second[i] == second[k]:
                found[k] = True
                break
            i += 1
    return found


def audit_event_file(path: StoragePath, required: list[str]) -> dict[str, int]:
    """Rows of one event file, rows missing one of the ``required`` fields, and rows repeating an
    earlier row's event_id, read batch by batch (a busy day's file does not fit in memory as a frame)."""
    counts, seen = {"rows": 0, "missing_fields": 0, "duplicate_ids": 0}, SeenIds()
    if not path.exists():
        return counts
    for batch in read_batches(path, ROW_GROUP, columns=sorted({"event_id", *required})):
        frame = batch.to_pandas()
        counts["rows"] += len(frame)
        counts["missing_fields"] += int(frame[required].isna().any(axis=1).sum())
        counts["duplicate_ids"] += int((~seen.take(frame["event_id"].to_numpy(dtype=object))).sum())
    return counts


class _DayFile:
    """One partition's new file being written: the stored rows first, then each page's new ones."""

    def __init__(self, path: StoragePath, fsync: bool, stack: contextlib.ExitStack) -> None:
        self.seen, self.stored, self.added = SeenIds(), 0, 0
        handle = stack.enter_context(open_atomic(path, fsync))
        self.writer = pq.ParquetWriter(
            handle, EVENT_SCHEMA, compression="zstd", encryption_properties=encryption_properties()
        )
        stack.callback(self.writer.close)  # runs before the atomic swap (callbacks run last in, first out)
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        if path.exists():
            for batch in read_batches(path, ROW_GROUP):
                rows = as_event_table(pa.Table.from_batches([batch]))
                rows = rows.filter(pa.array(self.seen.take(rows["event_id"].to_numpy(zero_copy_only=False))))
                self.stored += len(rows)
                self.writer.write_table(rows)

    def add(self, rows: pa.Table) -> int:
        rows = rows.filter(pa.array(self.seen.take(rows["event_id"].to_numpy(zero_copy_only=False))))
        self.buffer.append(rows)
        self.buffered += len(rows)
        self.added += len(rows)
        if self.buffered >= ROW_GROUP:
            self.flush()
        return len(rows)

    def flush(self) -> None:
        if self.buffered:
            self.writer.write_table(pa.concat_tables(self.buffer))
        self.buffer, self.buffered = [], 0


class EventAppender:
    """Append pages of events to their UTC day partitions' ``<part>.parquet`` (see the module
    docstring). Use it as a context manager: the files are swapped in when the block succeeds.
    ``added`` is the rows newly stored per partition; ``duplicates`` the rows left out."""

    def __init__(self, store: OfflineStore, part: str, fsync: bool = True) -> None:
        self.store, self.part, self.fsync = store, part, fsync
        self.files: dict[str, _DayFile] = {}
        self.duplicates = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> EventAppender:
        self._stack.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            for day_file in self.files.values():
                day_file.flush()
        return self._stack.__exit__(*exc)

    @property
    def added(self) -> dict[str, int]:
        return {day: f.added for day, f in self.files.items()}

    def add(self, events: pa.Table | pd.DataFrame) -> int:
        """Take one page; returns its rows newly stored (erased users' rows are never stored)."""
        table = self.store.without_erased(as_event_table(events))
        if not len(table):
            return 0
        codes, names = partitions_of(table, "day")
        taken = 0
        for k, day in enumerate(names):
            rows = table.filter(pa.array(codes == k))
            if day not in self.files:
                self.files[day] = _DayFile(
                    self.store.event_partition(day) / f"{self.part}.parquet", self.fsync, self._stack
                )
            n = self.files[day].add(rows)
            self.duplicates += len(rows) - n
            taken += n
        return taken
