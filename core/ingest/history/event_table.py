"""The one way both export kinds become rows of the event table: typed columns in, an
``EVENT_SCHEMA`` Arrow table out, with no Python object per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.contracts.events import EVENT_SCHEMA
from core.ingest.history.event_ids import event_ids, string_hashes, track_hashes


def constant_column(value: str, n: int) -> pa.StringArray:
    """A string column of one value, without a Python object per row."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int8)), pa.array([value])).cast(pa.string())


def build_event_table(
    user_id: pa.Array,
    timestamp_ms: np.ndarray,
    track_id: pa.StringArray,
    ms_played: np.ndarray,
    event_type: pa.Array,
    source: str,
    track_hash: np.ndarray | None = None,
) -> pa.Table:
    """Events from one entry per stream in each argument: pseudonymous user, time (int64 ms since the
    epoch), validated 22-character track id, ms played (int64) and event type (strings); ``source``
    names the import. ``track_hash`` is :func:`track_hashes` of ``track_id`` when the caller has it.

    Returns an ``EVENT_SCHEMA`` table with deterministic event ids and the columns a history does not
    know (rating, recommendation context) null.
    """
    n = len(track_id)
    if track_hash is None:
        track_hash = track_hashes(track_id)
    known = {
        "event_id": event_ids(string_hashes(user_id), timestamp_ms, track_hash, ms_played),
        "user_id": user_id,
        "track_id": track_id,
        "type": event_type,
        "timestamp": pa.array(timestamp_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "ms_played": pa.array(ms_played, pa.int64()),
        "source": constant_column(source, n),
    }
    columns = [known[field.name] if field.name in known else pa.nulls(n, field.type) for field in EVENT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)
