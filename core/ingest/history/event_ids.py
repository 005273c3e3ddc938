"""Stable event ids for imported streams: 'sh-' + 16 hex digits hashed from (user, time, track, ms
played), so the same stream imported twice is one event.

The ids are stored, and re-imports are only idempotent while every step below stays bit for bit the
same (tests/core/ingest/test_history.py pins known ids); change nothing here without a migration.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# powers of the 64-bit FNV prime, wrapping: a polynomial hash over the 22 bytes of a Spotify id
_ID_WEIGHTS = np.cumprod(np.full(22, 1099511628211, dtype=np.uint64), dtype=np.uint64)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def track_hashes(track_id: pa.StringArray) -> np.ndarray:
    """A stable 64-bit value (uint64) per (validated, 22-character) track id, straight from Arrow's bytes."""
    n = len(track_id)
    offsets = np.frombuffer(track_id.buffers()[1], dtype=np.int32)[track_id.offset : track_id.offset + n + 1]
    data = np.frombuffer(track_id.buffers()[2], dtype=np.uint8)
    block = data[offsets[0] : offsets[0] + 22 * n].reshape(n, 22).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (block * _ID_WEIGHTS).sum(axis=1, dtype=np.uint64)


def string_hashes(strings: pa.Array) -> np.ndarray:
    """A stable 64-bit value (uint64) per string (Python's hash() is salted), computed once per distinct value."""
    encoded = pc.dictionary_encode(strings)
    digests = np.array([_digest(s) for s in encoded.dictionary.to_pylist()], dtype=np.uint64)
    return digests[encoded.indices.to_numpy(zero_copy_only=False)]


def _mix(*columns: np.ndarray) -> np.ndarray:
    """splitmix64 over the columns: a well-spread 64-bit value per row (overflow wraps, as intended)."""
    h = np.full(len(columns[0]), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            h ^= column.astype(np.uint64)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return h


def event_ids(
    user_hash: np.ndarray, timestamp_ms: np.ndarray, track_hash: np.ndarray, ms_played: np.ndarray
) -> pa.StringArray:
    """One id per stream from the hashes of its user (:func:`string_hashes`) and track (:func:`track_hashes`),
    its time as the export gives it (ms since the epoch) and its ms played."""
    h = _mix(
        user_hash, timestamp_ms.astype(np.int64).view(np.uint64), track_hash, ms_played.astype(np.int64).view(np.uint64)
    )
    return _hex_ids(h)


def _hex_ids(h: np.ndarray) -> pa.StringArray:
    """'sh-' + 16 hex digits per value, built as one Arrow buffer (no Python string per row)."""
    n = len(h)
    digits = np.frombuffer(h.astype(">u8").tobytes().hex().encode(), dtype=np.uint8).reshape(n, 16)
    body = np.empty((n, 19), dtype=np.uint8)
    body[:, :3] = np.frombuffer(b"sh-", dtype=np.uint8)
    body[:, 3:] = digits
    offsets = np.arange(0, 19 * (n + 1), 19, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(body.tobytes()))
