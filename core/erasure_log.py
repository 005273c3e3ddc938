"""The durable record of GDPR erasures: an append-only table in the offline store.

``tables/erasures/`` holds one small parquet file per append, never rewritten: each erasure request
and, as receipt entries, what was removed where. It is the authority on who was erased; Redis keeps a
copy for the hot paths (see :mod:`core.erasure`).

Nothing here holds an erased user's id: each user is recorded by a keyed digest (HMAC-SHA256 with a
key created once beside the log, owner-only), which anyone holding the key can compute from an id to
check it, and nobody can turn back into one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from core.ingest.pseudonyms import load_or_create_key
from core.parquet_files import write_parquet_atomic
from core.storage import StoragePath, as_location, read_table

ERASURE_SCHEMA = pa.schema(
    [
        pa.field("subject", pa.string(), nullable=False),  # the erased user's digest, never their id
        pa.field("place", pa.string(), nullable=False),  # "request", or where something was removed
        pa.field("removed", pa.int64()),  # how many (keys, entries, lines, rows, versions)
        pa.field("detail", pa.string()),
        pa.field("at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
REQUEST = "request"


@dataclass(frozen=True)
class ReceiptEntry:
    place: str
    removed: int | None
    detail: str | None
    at: float  # epoch seconds


class ErasureLog:
    """Append-only record of erasures and their receipts under ``folder``."""

    def __init__(self, folder: StoragePath) -> None:
        self.folder = as_location(folder)
        self._key: bytes | None = None
        self._cache: tuple[tuple[str, ...], pd.DataFrame] | None = None

    # --- subjects ------------------------------------------------------------------------------
    def digest(self, user_id: str) -> str:
        """The subject under which ``user_id``'s erasure is recorded."""
        if self._key is None:
            self._key = load_or_create_key(self.folder / ".key")
        return "e_" + hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def erased_among(self, user_ids: Iterable[str], subjects: Iterable[str] | None = None) -> set[str]:
        """The ids among ``user_ids`` whose digest is an erased subject (``subjects``: default the log's)."""
        subjects = set(self.subjects()) if subjects is None else set(subjects)
        if not subjects:
            return set()
        return {u for u in set(user_ids) if self.digest(u) in subjects}

    # --- writing -------------------------------------------------------------------------------
    def record_request(self, subject: str, at: float | None = None) -> float:
        """Record that ``subject`` asked to be erased (fsync'd before returning). Returns the time."""
        at = time.time() if at is None else at
        self.append(subject, [(REQUEST, None, None)], at)
        return at

    def append(self, subject: str, entries: list[tuple[str, int | None, str | None]], at: float | None = None) -> None:
        """Add receipt entries (place, removed, detail) for ``subject``."""
        if not entries:
            return
        at = time.time() if at is None else at
        frame = pd.DataFrame(
            {
                "subject": subject,
                "place": [e[0] for e in entries],
                "removed": [e[1] for e in entries],
                "detail": [e[2] for e in entries],
                "at": pd.to_datetime(at, unit="s", utc=True),
            }
        )
        frame["removed"] = frame["removed"].astype("Int64")
        write_parquet_atomic(
            frame, self.folder / f"{int(at * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet", ERASURE_SCHEMA
        )

    # --- reading -------------------------------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        files = tuple(sorted(p.name for p in self.folder.glob("*.parquet"))) if self.folder.exists() else ()
        if self._cache is None or self._cache[0] != files:
            frames = [read_table(self.folder / f, schema=ERASURE_SCHEMA).to_pandas() for f in files]
            frame = pd.concat(frames, ignore_index=True) if frames else ERASURE_SCHEMA.empty_table().to_pandas()
            self._cache = (files, frame)
        return self._cache[1]

    def subjects(self) -> dict[str, float]:
        """Every erased subject -> epoch seconds of their (first) request."""
        requests = self._frame()
        requests = requests[requests["place"] == REQUEST]
        first = requests.groupby("subject")["at"].min()
        return {s: t.timestamp() for s, t in first.items()}

    def receipt(self, subject: str) -> list[ReceiptEntry]:
        """Everything recorded for ``subject``, oldest first (empty when it was never erased)."""
        rows = self._frame()
        rows = rows[rows["subject"] == subject].sort_values("at", kind="stable")
        return [
            ReceiptEntry(
                r.place,
                None if pd.isna(r.removed) else int(r.removed),
                None if pd.isna(r.detail) else r.detail,
                r.at.timestamp(),
            )
            for r in rows.itertuples()
        ]
