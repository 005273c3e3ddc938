"""GDPR erasure in the offline store: every stored row of an erased user is deleted, in every table.

Called before every training run with every erasure ever requested, so a re-import of an old export
cannot bring an erased user's rows back into training. Files are rewritten atomically
(:func:`core.tables.write_parquet_atomic`) and only when they hold such a row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts.events import EVENT_SCHEMA
from core.tables import OfflineStore, write_parquet_atomic


def erase_users(store: OfflineStore, erasures: dict[str, float]) -> dict[str, int]:
    """Delete every stored row of the users in ``erasures`` (user id -> epoch seconds of the
    request) dated up to their request: events, interaction logs, the interactions table, and
    rejected rows that mention them. Files are rewritten atomically and only when they hold such a
    row, so a second call changes nothing. Returns rows deleted per table kind."""
    deleted = {"events": 0, "interaction_logs": 0, "interactions": 0, "rejects": 0}
    if not erasures:
        return deleted
    users = pa.array(sorted(erasures), pa.string())
    cutoffs = pa.array([int(erasures[u] * 1000) for u in users.to_pylist()], pa.int64())

    def doomed(table: pa.Table) -> pa.Array:
        """Rows of an erased user, dated at or before their request (undated rows count as before)."""
        index = pc.index_in(table["user_id"], value_set=users)
        hit = pc.is_valid(index)
        if "timestamp" not in table.column_names or not pc.any(hit).as_py():
            return hit
        cutoff = pc.take(cutoffs, pc.fill_null(index, 0))
        when = pc.cast(pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC"), safe=False), pa.int64())
        return pc.and_(hit, pc.fill_null(pc.less_equal(when, cutoff), True))

    def rewrite(path: Path, schema: pa.Schema | None, kind: str, mask_of) -> None:
        table = pq.read_table(path, schema=schema)
        mask = mask_of(table)
        n = pc.sum(pc.cast(mask, pa.int64())).as_py() or 0
        if n:
            write_parquet_atomic(table.filter(pc.invert(mask)), path, schema)
            deleted[kind] += n

    for path in store.event_files():
        rewrite(path, EVENT_SCHEMA, "events", doomed)
    for source in store.interaction_sources():
        rewrite(store.interaction_source_path(source), None, "interaction_logs", doomed)
    if store.interactions_path.exists():
        rewrite(store.interactions_path, None, "interactions", doomed)
    quoted = [f'"{u}"' for u in users.to_pylist()]
    for path in store.rejects_files():
        # a rejected row is kept as raw text: drop every one that names an erased user
        rewrite(path, None, "rejects", lambda t: _mentions(t["raw"], quoted))
    return deleted


def _mentions(column: pa.ChunkedArray, needles: list[str]) -> pa.Array:
    mask = pa.array(np.zeros(len(column), dtype=bool))
    for needle in needles:
        mask = pc.or_(mask, pc.fill_null(pc.match_substring(column, needle), False))
    return mask
