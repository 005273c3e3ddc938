"""Where shared data lives: a folder on this host or an object store every host reaches.

``ECHOTUNE_STORAGE_URL`` names the root of the offline tables, reports, the API's model cache and
MLflow's artifacts. A local path stays a :class:`pathlib.Path` (the default, unchanged); a URI
(``s3://bucket/prefix``) becomes a :class:`upath.UPath` over fsspec (s3fs), which has the same
methods (``/``, ``exists``, ``glob``, ``open``, ``unlink``), so the stores use one code path for both.
The few calls that need a real file name (pyarrow, pandas, Evidently) go through the helpers here.
Credentials come from the standard ``AWS_*`` variables, read by botocore; the endpoint of an
S3-compatible server is a storage option carried by every path derived from the root.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

from core.table_encryption import decryption_properties, process_cipher

StoragePath = Path | UPath


def location(url: str | Path, s3_endpoint_url: str | None = None) -> StoragePath:
    """``url`` as a path: a local path as a ``Path``, a URI as a ``UPath`` (``s3://`` with
    ``s3_endpoint_url`` when one is given, for MinIO, SeaweedFS and the like)."""
    text = str(url)
    if "://" not in text:
        return Path(text)
    options = {"endpoint_url": s3_endpoint_url} if s3_endpoint_url and text.startswith("s3://") else {}
    return UPath(text, **options)


def is_remote(path: StoragePath | str) -> bool:
    return isinstance(path, UPath) and not isinstance(path, Path)


def as_location(path: StoragePath | str) -> StoragePath:
    """A path given as either kind (or as a local path string) as a path object."""
    return path if is_remote(path) else Path(path)


def _arrow(path: StoragePath) -> tuple[str, object | None]:
    """The (path, filesystem) pair pyarrow and pandas take; no filesystem for a local file."""
    return (path.path, path.fs) if is_remote(path) else (str(path), None)


# Every reader below decrypts a table written encrypted (ECHOTUNE_TABLE_ENCRYPTION_KEY, core.table_encryption);
# a plain file reads as before.
def read_table(path: StoragePath, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
    source, fs = _arrow(path)
    return pq.read_table(
        source, schema=schema, columns=columns, filesystem=fs, decryption_properties=decryption_properties()
    )


def read_frame(path: StoragePath, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file as a DataFrame (what ``pd.read_parquet`` gives for a local file)."""
    source, fs = _arrow(path)
    return pd.read_parquet(source, columns=columns, filesystem=fs, decryption_properties=decryption_properties())


def read_batches(
    path: StoragePath, batch_size: int = 65_536, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """A parquet file batch by batch: memory bounded by the batch, not the file."""
    source, fs = _arrow(path)
    with pq.ParquetFile(source, filesystem=fs, decryption_properties=decryption_properties()) as file:
        yield from file.iter_batches(batch_size=batch_size, columns=columns)


def read_files(files: Sequence[StoragePath], schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Many parquet files of one folder tree as one table (multi-threaded C++ read)."""
    cipher = process_cipher()
    fmt = cipher.dataset_format() if cipher else "parquet"
    if files and is_remote(files[0]):
        return ds.dataset([f.path for f in files], schema=schema, format=fmt, filesystem=files[0].fs).to_table(
            columns=columns
        )
    return ds.dataset(list(files), schema=schema, format=fmt).to_table(columns=columns)


def write_atomic(path: StoragePath, write, fsync: bool = True) -> StoragePath:
    """Call ``write(handle)`` so that readers see the old file or the new one, never half of one
    (see :func:`open_atomic`)."""
    with open_atomic(path, fsync) as handle:
        write(handle)
    return path


@contextlib.contextmanager
def open_atomic(path: StoragePath, fsync: bool = True) -> Iterator[BinaryIO]:
    """A handle to write ``path`` through, for writers that write in pieces (a parquet file row group
    by row group): readers see the old file or the new one, never half of one, and the old one is
    replaced only when the block ends without an exception.

    Locally: a temporary file beside ``path``, fsync'd (unless ``fsync=False``), then renamed; a crash
    leaves no torn file. In an object store: a local temporary file uploaded in one piece when the
    block succeeds (one upload is all or nothing; the store's own write handle would upload whatever
    was written so far when an exception closes it)."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="echotune-upload-") as tmp:
            local = Path(tmp) / path.name
            with local.open("wb") as handle:
                yield handle
            path.fs.put_file(str(local), path.path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def local_file(path: StoragePath) -> Iterator[Path]:
    """A local file name to write ``path`` through, for writers that only take file names (Evidently's
    HTML): ``path`` itself on this host, else a temporary file uploaded on success."""
    if not is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="echotune-upload-") as tmp:
        local = Path(tmp) / path.name
        yield local
        path.write_bytes(local.read_bytes())


@contextlib.contextmanager
def local_folder(folder: StoragePath) -> Iterator[Path]:
    """``folder`` as a local folder to read (MLflow logs artifacts only from local files): itself on
    this host, else a temporary copy."""
    if not is_remote(folder):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="echotune-download-") as tmp:
        folder.fs.get(folder.path.rstrip("/") + "/", tmp, recursive=True)
        yield Path(tmp)


def modified_ns(path: StoragePath) -> int:
    """When ``path`` last changed, in nanoseconds (an object's upload time in an object store)."""
    stat = path.stat()
    return stat.st_mtime_ns if not is_remote(path) else int(stat.st_mtime * 1e9)
