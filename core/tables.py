"""The offline store: parquet tables under ``<data_dir>/tables`` (or ``<storage_url>/tables``, see
:mod:`core.storage`), one layout used by every writer.

``tracks.parquet``                    the catalog (TRACK_SCHEMA), one row per track id
``events/date=YYYY-MM-DD/<part>.parquet``  feedback events (EVENT_SCHEMA), partitioned by UTC day
``events/month=YYYY-MM/<part>.parquet``     (bulk imports spanning years go by month);
                                      each source writes its own part files, so re-running one source
                                      replaces its files and never touches another's
``interactions.parquet``              graded (user, item) pairs that training reads
``rejects/<source>.parquet``          rows that failed validation, with the reason
``sources/tracks/<source>.parquet``   each track source's own table, merged into ``tracks.parquet``
``sources/interactions/<source>.parquet``  user-item logs (counts or weights) read beside events
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts.events import EVENT_SCHEMA
from core.contracts.tracks import TRACK_SCHEMA
from core.erasure_log import ErasureLog
from core.event_files import EventAppender, as_event_table, partitions_of
from core.parquet_files import write_parquet_atomic
from core.storage import StoragePath, as_location, read_files, read_frame, read_table


class OfflineStore:
    def __init__(self, tables_dir: StoragePath) -> None:
        self.root = as_location(tables_dir)
        # who was erased (GDPR): their rows are never written here again, whatever path they come by
        self.erasures = ErasureLog(self.root / "erasures")

    # --- paths ------------------------------------------------------------------------------
    @property
    def tracks_path(self) -> StoragePath:
        return self.root / "tracks.parquet"

    @property
    def events_dir(self) -> StoragePath:
        return self.root / "events"

    @property
    def interactions_path(self) -> StoragePath:
        return self.root / "interactions.parquet"

    def rejects_path(self, source: str) -> StoragePath:
        return self.root / "rejects" / f"{source}.parquet"

    def rejects_files(self) -> list[StoragePath]:
        return sorted((self.root / "rejects").glob("*.parquet"))

    def track_source_path(self, source: str) -> StoragePath:
        """One source's own track table (merged into ``tracks.parquet`` by the catalog)."""
        return self.root / "sources" / "tracks" / f"{source}.parquet"

    def track_sources(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "sources" / "tracks").glob("*.parquet"))

    def interaction_source_path(self, source: str) -> StoragePath:
        """One source's user-item log (listen counts or weights) that training reads beside events."""
        return self.root / "sources" / "interactions" / f"{source}.parquet"

    def interaction_sources(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "sources" / "interactions").glob("*.parquet"))

    def event_partition(self, day: date | str) -> StoragePath:
        return self.events_dir / f"date={day}"

    # --- tracks -----------------------------------------------------------------------------
    def write_tracks(self, tracks: pd.DataFrame) -> StoragePath:
        return write_parquet_atomic(tracks[TRACK_SCHEMA.names], self.tracks_path, TRACK_SCHEMA)

    def read_tracks(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The catalog (only ``columns`` when given: the sensor reads the ids alone)."""
        if not self.tracks_path.exists():
            raise FileNotFoundError(f"no catalog at {self.tracks_path}: materialize the tracks asset first")
        return read_frame(self.tracks_path, columns=columns)

    # --- events -----------------------------------------------------------------------------
    def write_events(
        self, events: pa.Table | pd.DataFrame, part: str, merge: bool = False, fsync: bool = True, by: str = "day"
    ) -> dict[str, int]:
        """Write events into their UTC ``day`` (``date=YYYY-MM-DD``) or ``month`` (``month=YYYY-MM``)
        partitions as ``<part>.parquet``; no other part is touched.

        Live and generated events go by day. Bulk imports spanning years go by month: a day file
        per part would mean thousands of tiny files that are slow to write and slower to read.
        ``merge=False`` replaces the part's files for the partitions written; ``merge=True`` adds to
        them, keeping the stored row when an event_id is already there (re-imports add nothing).
        Returns rows newly stored per partition.
        """
        if by not in ("day", "month"):
            raise ValueError(f"by must be 'day' or 'month', not {by!r}")
        table = self.without_erased(as_event_table(events))
        if not len(table):
            return {}
        codes, names = partitions_of(table, by)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        table = table.take(pa.array(order))

        def write(k: int) -> int:
            rows = table.slice(bounds[k], bounds[k + 1] - bounds[k])
            path = self.events_dir / f"{'date' if by == 'day' else 'month'}={names[k]}" / f"{part}.parquet"
            before = 0
            if merge and path.exists():
                existing = read_table(path, schema=EVENT_SCHEMA)
                before = len(existing)
                rows = pa.concat_tables([existing, rows])
                rows = rows.filter(
                    pa.array(~pd.Series(rows["event_id"].to_numpy(zero_copy_only=False)).duplicated().to_numpy())
                )
            write_parquet_atomic(rows, path, EVENT_SCHEMA, fsync=fsync)
            return len(rows) - before

        # parquet encoding releases the GIL: partitions are written on every core
        with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1, 4)) as pool:
            return dict(zip(map(str, names), pool.map(write, range(len(names)))))

    def append_events(self, part: str, fsync: bool = True) -> EventAppender:
        """Append events to their UTC day partitions' ``<part>.parquet`` page by page, in memory bounded
        by the page, each id stored once (:class:`core.event_files.EventAppender`): ``with
        store.append_events("live") as out: out.add(page)``; the files are swapped in when the block ends."""
        return EventAppender(self, part, fsync)

    def without_erased(self, table: pa.Table) -> pa.Table:
        """``table`` without the rows of erased users (every writer of user rows passes through here)."""
        if not len(table) or not self.erasures.subjects():
            return table
        erased = self.erasures.erased_among(pc.unique(table["user_id"]).drop_null().to_pylist())
        if not erased:
            return table
        return table.filter(
            pc.invert(pc.fill_null(pc.is_in(table["user_id"], value_set=pa.array(sorted(erased), pa.string())), False))
        )

    def write_interaction_source(self, source: str, logs: pd.DataFrame, schema: pa.Schema) -> int:
        """Store one source's user-item log (erased users' rows left out); returns the rows stored."""
        table = self.without_erased(pa.Table.from_pandas(logs, schema=schema, preserve_index=False, safe=False))
        write_parquet_atomic(table, self.interaction_source_path(source), schema)
        return len(table)

    def event_files(self) -> list[StoragePath]:
        if not self.events_dir.exists():
            return []
        return sorted(self.events_dir.glob("date=*/*.parquet")) + sorted(self.events_dir.glob("month=*/*.parquet"))

    def read_events(self, days: Iterable[str] | None = None, since: str | None = None) -> pd.DataFrame:
        """All events (or those on ``days``, or on ``since`` and later; UTC days 'YYYY-MM-DD'),
        deduplicated on event_id, oldest first. Only the partitions holding them are read."""
        files = self.event_files()
        if days is not None:
            wanted = set(days)
            months = {d[:7] for d in wanted}
            files = [
                f
                for f in files
                if f.parent.name.split("=", 1)[1] in (wanted if f.parent.name.startswith("date=") else months)
            ]
        if since is not None:
            files = [
                f
                for f in files
                if f.parent.name.split("=", 1)[1] >= (since if f.parent.name.startswith("date=") else since[:7])
            ]
        if not files:
            return EVENT_SCHEMA.empty_table().to_pandas()
        table = read_files(files, EVENT_SCHEMA)
        if days is not None or since is not None:
            codes, names = partitions_of(table, "day")
            keep = np.isin(names, sorted(wanted)) if days is not None else np.ones(len(names), dtype=bool)
            table = table.filter(pa.array((keep & (names >= since if since is not None else True))[codes]))
        frame = table.to_pandas()
        return frame.drop_duplicates("event_id").sort_values("timestamp", kind="stable").reset_index(drop=True)

    def count_events_after(self, after_ms: int, part: str = "live") -> int:
        """Events of ``part`` (default: live feedback) stored with a timestamp after ``after_ms``; reads
        only the day partitions from that day on."""
        first_day = np.datetime64(int(after_ms), "ms").astype("datetime64[D]").astype(str)
        files = [
            f
            for f in self.event_files()
            if f.name == f"{part}.parquet"
            and f.parent.name.startswith("date=")
            and f.parent.name.split("=", 1)[1] >= first_day
        ]
        if not files:
            return 0
        table = read_files(files, EVENT_SCHEMA, columns=["timestamp"])
        after = pa.scalar(int(after_ms), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        return int(pc.sum(pc.cast(pc.greater(table["timestamp"], after), pa.int64())).as_py() or 0)

    def remove_event_part(self, part: str) -> int:
        """Delete ``part`` from every partition (a source that regenerates its events replaces them all)."""
        files = [f for f in self.event_files() if f.name == f"{part}.parquet"]
        for f in files:
            f.unlink()
        return len(files)

    def read_event_part(self, day: date | str, part: str) -> pd.DataFrame:
        path = self.event_partition(day) / f"{part}.parquet"
        return (
            read_table(path, schema=EVENT_SCHEMA).to_pandas()
            if path.exists()
            else EVENT_SCHEMA.empty_table().to_pandas()
        )

    # --- interactions -----------------------------------------------------------------------
    def write_interactions(self, interactions: pd.DataFrame) -> StoragePath:
        return write_parquet_atomic(interactions, self.interactions_path)

    def read_interactions(self) -> pd.DataFrame:
        if not self.interactions_path.exists():
            raise FileNotFoundError(f"no interactions at {self.interactions_path}: materialize interactions first")
        return read_frame(self.interactions_path)
