"""The offline store: parquet tables under ``<data_dir>/tables``, one layout used by every writer.

``tracks.parquet``                    the catalog (TRACK_SCHEMA), one row per track id
``events/date=YYYY-MM-DD/<part>.parquet``  feedback events (EVENT_SCHEMA), partitioned by UTC day;
                                      each source writes its own part files, so re-running one source
                                      replaces its files and never touches another's
``interactions.parquet``              graded (user, item) pairs that training reads
``rejects/<source>.parquet``          rows that failed validation, with the reason
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from echotune.contracts.events import EVENT_SCHEMA
from echotune.contracts.tracks import TRACK_SCHEMA


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write to a temporary file beside ``path``, fsync, then rename: readers see the old or the new
    file, never half of one, and a crash leaves no torn file."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    elif schema is not None:
        table = table.cast(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OfflineStore:
    def __init__(self, tables_dir: Path) -> None:
        self.root = Path(tables_dir)

    # --- paths ------------------------------------------------------------------------------
    @property
    def tracks_path(self) -> Path:
        return self.root / "tracks.parquet"

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def interactions_path(self) -> Path:
        return self.root / "interactions.parquet"

    def rejects_path(self, source: str) -> Path:
        return self.root / "rejects" / f"{source}.parquet"

    def event_partition(self, day: date | str) -> Path:
        return self.events_dir / f"date={day}"

    # --- tracks -----------------------------------------------------------------------------
    def write_tracks(self, tracks: pd.DataFrame) -> Path:
        return write_parquet_atomic(tracks[TRACK_SCHEMA.names], self.tracks_path, TRACK_SCHEMA)

    def read_tracks(self) -> pd.DataFrame:
        if not self.tracks_path.exists():
            raise FileNotFoundError(f"no catalog at {self.tracks_path}: materialize the tracks asset first")
        return pd.read_parquet(self.tracks_path)

    # --- events -----------------------------------------------------------------------------
    def write_events(self, events: pd.DataFrame, part: str) -> list[Path]:
        """Write events into their day partitions as ``<part>.parquet`` (replacing that part only)."""
        days = events["timestamp"].dt.tz_convert("UTC").dt.date
        written = []
        for day, rows in events.groupby(days, sort=True):
            written.append(self.write_event_part(rows, day, part))
        return written

    def write_event_part(self, rows: pd.DataFrame, day: date | str, part: str) -> Path:
        path = self.event_partition(day) / f"{part}.parquet"
        return write_parquet_atomic(rows[EVENT_SCHEMA.names], path, EVENT_SCHEMA)

    def event_days(self) -> list[str]:
        if not self.events_dir.exists():
            return []
        return sorted(p.name.split("=", 1)[1] for p in self.events_dir.glob("date=*") if any(p.glob("*.parquet")))

    def read_events(self, days: Iterable[str] | None = None) -> pd.DataFrame:
        """All events (or those of ``days``), deduplicated on event_id, oldest first."""
        wanted = list(days) if days is not None else self.event_days()
        files = [f for d in wanted for f in sorted(self.event_partition(d).glob("*.parquet"))]
        if not files:
            return EVENT_SCHEMA.empty_table().to_pandas()
        table = pa.concat_tables([pq.read_table(f, schema=EVENT_SCHEMA) for f in files])
        frame = table.to_pandas()
        return frame.drop_duplicates("event_id").sort_values("timestamp", kind="stable").reset_index(drop=True)

    # --- interactions -----------------------------------------------------------------------
    def write_interactions(self, interactions: pd.DataFrame) -> Path:
        return write_parquet_atomic(interactions, self.interactions_path)

    def read_interactions(self) -> pd.DataFrame:
        if not self.interactions_path.exists():
            raise FileNotFoundError(f"no interactions at {self.interactions_path}: materialize interactions first")
        return pd.read_parquet(self.interactions_path)
