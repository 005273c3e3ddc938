"""What every import reports: rows read, accepted, rejected (with reasons), duplicates, and extras.

Rejected rows go to a rejects table with the reason and the offending row (with PII fields removed),
so every row read is accounted for: ``read == accepted + rejected + duplicates + dropped``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from core.parquet_files import write_parquet_atomic
from core.tables import OfflineStore

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("file", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
        # the user the row belongs to as the stored rows name them (a history import's pseudonym), when
        # known: an erasure finds the row by it (the raw row has its PII, the username, removed)
        pa.field("user_id", pa.string()),
    ]
)


@dataclass
class Rejects:
    """Collects rejected rows of one import. ``row`` is the 1-based data row in its file (a header line
    is not counted)."""

    source: str
    rows: list[tuple[str, int, str, str, str | None]] = field(default_factory=list)

    def add(self, file: str, row: int, reason: str, raw: Any, user_id: str | None = None) -> None:
        raw_text = orjson.dumps(raw, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        self.rows.append((file, row, reason, raw_text, user_id))

    def add_many(
        self, file: str, rows: pd.Series, reasons: pd.Series, raws: list[Any], users: list[str] | None = None
    ) -> None:
        for i, (row, reason, raw) in enumerate(zip(rows, reasons, raws)):
            self.add(file, int(row), str(reason), raw, None if users is None else users[i])

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [(self.source, *r) for r in self.rows], columns=["source", "file", "row", "reason", "raw", "user_id"]
        )

    def reasons(self) -> dict[str, int]:
        # group "energy 1.5 is outside [0, 1]" and "energy 7 is outside ..." under one heading
        return dict(Counter(r[2].split(":")[0] for r in self.rows).most_common())


@dataclass
class ImportResult:
    source: str
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    dropped: int = 0  # rows deliberately out of scope (podcasts, incognito), not errors
    rejects: Rejects = None  # type: ignore[assignment]  # set in __post_init__
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rejects is None:
            self.rejects = Rejects(self.source)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    def summary(self) -> dict[str, Any]:
        """The one-line JSON the CLI prints and the metadata Dagster shows."""
        return {
            "source": self.source,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "rejected_share": round(self.rejected_share, 6),
            "reject_reasons": self.rejects.reasons(),
            **self.extra,
        }

    def save_rejects(self, store: OfflineStore) -> None:
        """Replace this source's rejects table (an import's rejects describe its latest run)."""
        write_parquet_atomic(self.rejects.frame(), store.rejects_path(self.source), REJECTS_SCHEMA)
