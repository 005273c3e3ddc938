"""Parquet files written so that no reader ever sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomic(
    table: pa.Table | pd.DataFrame, path: Path, schema: pa.Schema | None = None, fsync: bool = True
) -> Path:
    """Write to a temporary file beside ``path``, fsync, then rename: readers see the old or the new
    file, never half of one, and a crash leaves no torn file. ``fsync=False`` for outputs that a rerun
    recreates (bulk imports), where a flush per file would dominate the run."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False, safe=False)
    elif schema is not None:
        table = table.cast(schema, safe=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
