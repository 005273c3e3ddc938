"""Generic interaction logs: one row per (user, item) with a listen count or a weight, optional time.

Columns are found by name, case-insensitively: user (``user_id``, ``userID``, ``user``), item
(``item_id``, ``track_id``, ``itemID``, ``artistID``, ``artist_id``, ``item``), value (``count``,
``plays``, ``playcount``, ``listen_count``, ``weight``, ``rating``) and time (``timestamp``, ``ts``,
``time``, ``datetime``). Tab-separated ``.dat``/``.tsv`` files (Last.fm's ``user_artists.dat``) and
CSV, Parquet or JSON work the same way.

``kind`` says what the value means: ``count`` (listens; training uses log1p) or ``weight`` (used as it
is). ``auto`` treats integer values with a maximum above 10 as counts. Rows with a missing or unsafe id,
a non-numeric or negative value, or an unparseable time are rejected; repeated (user, item, time) keys
are duplicates (the last one is kept).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.contracts.ids import SAFE_ID
from core.ingest.result import ImportResult
from core.ingest.track_files import read_table

USER = ("user_id", "userid", "user")
ITEM = ("item_id", "track_id", "itemid", "artistid", "artist_id", "item", "trackid")
VALUE = ("count", "plays", "playcount", "listen_count", "weight", "rating", "value")
TIME = ("timestamp", "ts", "time", "datetime")

LOG_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("kind", pa.string()),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    ]
)


def _find(frame: pd.DataFrame, names: tuple[str, ...], what: str, file: str, required: bool = True) -> str | None:
    lowered = {c.lower().strip(): c for c in frame.columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    if required:
        raise ValueError(
            f"{file}: no {what} column (expected one of {', '.join(names)}; found {', '.join(map(str, frame.columns))})"
        )
    return None


def import_interaction_logs(
    paths: Iterable[Path], source: str = "interaction_logs", kind: str = "auto", progress=None
) -> tuple[pd.DataFrame, ImportResult]:
    """Read, validate and deduplicate logs. Returns rows in LOG_SCHEMA and the accounting."""
    if kind not in {"auto", "count", "weight"}:
        raise ValueError(f"kind must be auto, count or weight, not {kind!r}")
    result = ImportResult(source=source)
    frames = []
    for path in map(Path, paths):
        raw = read_table(path)
        result.read += len(raw)
        file = str(path)
        user_col, item_col = _find(raw, USER, "user", file), _find(raw, ITEM, "item", file)
        value_col, time_col = _find(raw, VALUE, "count/weight", file), _find(raw, TIME, "time", file, required=False)
        users = raw[user_col].astype("string").str.strip()
        items = raw[item_col].astype("string").str.strip()
        values = pd.to_numeric(raw[value_col], errors="coerce")
        times = (
            pd.to_datetime(raw[time_col], utc=True, errors="coerce", format="mixed")
            if time_col
            else pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
        )

        reasons = pd.Series("", index=raw.index, dtype=object)
        checks = [
            (users.isna() | (users == ""), f"{user_col}: missing"),
            (
                ~users.fillna("").str.fullmatch(SAFE_ID.pattern.strip("^$")),
                f"{user_col}: not 1-128 letters, digits or _.:@-",
            ),
            (items.isna() | (items == ""), f"{item_col}: missing"),
            (values.isna(), f"{value_col}: not a number"),
            (values < 0, f"{value_col}: negative"),
        ]
        if time_col:
            checks.append((raw[time_col].notna() & times.isna(), f"{time_col}: not a timestamp"))
        for mask, reason in checks:
            reasons[mask.fillna(True).astype(bool) & (reasons == "")] = reason
        bad = reasons != ""
        if bad.any():
            result.rejects.add_many(file, raw.index[bad] + 1, reasons[bad], raw.loc[bad].to_dict(orient="records"))
        ok = ~bad
        frames.append(
            pd.DataFrame(
                {
                    "user_id": users[ok].astype(str),
                    "item_id": items[ok].astype(str),
                    "value": values[ok].astype("float64"),
                    "timestamp": times[ok],
                }
            )
        )
        if progress is not None:
            progress(len(raw))

    logs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LOG_SCHEMA.names)
    if kind == "auto":
        v = logs["value"].to_numpy()
        kind = "count" if len(v) and np.all(np.mod(v, 1) == 0) and v.max() > 10 else "weight"
    logs["kind"] = kind
    before = len(logs)
    logs = logs.drop_duplicates(["user_id", "item_id", "timestamp"], keep="last").reset_index(drop=True)
    result.duplicates = before - len(logs)
    result.accepted = len(logs)
    result.extra.update(
        {"kind": kind, "users": int(logs["user_id"].nunique()), "items": int(logs["item_id"].nunique())}
    )
    return logs[LOG_SCHEMA.names], result
