"""Parquet files written so that no reader ever sees half of one."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.storage import StoragePath, write_atomic
from core.table_encryption import encryption_properties


def write_parquet_atomic(
    table: pa.Table | pd.DataFrame, path: StoragePath, schema: pa.Schema | None = None, fsync: bool = True
) -> StoragePath:
    """Write ``table`` to ``path`` (local or in object storage, see :func:`core.storage.write_atomic`):
    readers see the old or the new file, never half of one, and a crash leaves no torn file.
    ``fsync=False`` for outputs that a rerun recreates (bulk imports), where a flush per file would
    dominate the run. Encrypted when ECHOTUNE_TABLE_ENCRYPTION_KEY is set (:mod:`core.table_encryption`)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False, safe=False)
    elif schema is not None:
        table = table.cast(schema, safe=False)
    encryption = encryption_properties()
    return write_atomic(
        path,
        lambda handle: pq.write_table(table, handle, compression="zstd", encryption_properties=encryption),
        fsync=fsync,
    )
