"""Track features from files: CSV, Parquet or JSON in Spotify's schema, tolerant of the usual variants.

Accepted shapes: one row per track with an id column (``track_id``, ``id``, ``uri``, ``spotify_track_uri``,
``track_uri``; a bare id, a ``spotify:track:`` URI or an open.spotify.com URL), optional metadata
(``name``/``track``, ``artists``/``artist``, ``album``, ``genres``, ``duration_ms``, ``explicit``,
``release_year``/``year``/``release_date``) and audio features under Spotify's names. Extra columns are
ignored. JSON may be an array of objects, JSON lines, or a Web API response (``{"audio_features": [...]}``
or ``{"tracks": [...]}``).

Every row is validated: an unparseable id, a non-numeric or out-of-range audio feature, or a bad
duration/year rejects the row with a reason naming the column. Rows for the same track are merged
(first non-null value per column) and counted as duplicates.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from core.contracts.tracks import AUDIO_FEATURE_RANGES, AUDIO_FEATURES, TRACK_SCHEMA
from core.ingest.result import ImportResult, Rejects

ID_COLUMNS = ("track_id", "id", "uri", "spotify_track_uri", "track_uri", "spotify_uri")
ALIASES = {
    "name": ("name", "track", "track_name", "title", "master_metadata_track_name"),
    "artists": ("artists", "artist", "artist_name", "artist_names", "master_metadata_album_artist_name"),
    "artist_ids": ("artist_ids",),
    "album": ("album", "album_name", "master_metadata_album_album_name"),
    "genres": ("genres", "genre"),
    "duration_ms": ("duration_ms", "duration"),
    "explicit": ("explicit",),
    "release_year": ("release_year", "year", "release_date"),
}
_ID = re.compile(r"^(?:spotify:track:|https?://open\.spotify\.com/(?:intl-[a-z]+/)?track/)?([0-9A-Za-z]{22})(?:\?.*)?$")
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def read_table(path: Path) -> pd.DataFrame:
    """Read one CSV / Parquet / JSON file into a frame of raw rows (no validation yet)."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv", ".txt", ".dat"}:
        sep = "\t" if suffix in {".tsv", ".dat"} else None
        return pd.read_csv(
            path, sep=sep, engine="python" if sep is None else "c", dtype=str, keep_default_na=False, na_values=[""]
        )
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".json", ".jsonl", ".ndjson"}:
        raw = path.read_bytes()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:  # JSON lines
            data = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        if isinstance(data, dict):
            for key in ("audio_features", "tracks", "items"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
            else:
                data = [data]
        return pd.json_normalize([d for d in data if d is not None], max_level=0)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv, .parquet or .json)")


def _pick(frame: pd.DataFrame, names: Iterable[str]) -> pd.Series | None:
    lowered = {c.lower(): c for c in frame.columns}
    for name in names:
        if name in lowered:
            return frame[lowered[name]]
    return None


def _as_list(value) -> list[str] | None:
    """A list of names from a list, a JSON/Python list literal, Spotify artist objects or 'a;b' text."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = [text.strip("[]")]
        else:
            value = [p.strip() for p in re.split(r"[;|]", text) if p.strip()]
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list | tuple):
        out = [str(v["name"]) if isinstance(v, dict) and "name" in v else str(v) for v in value if v is not None]
        return out or None
    return [str(value)]


def _parse_bool(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    text = series.astype(str).str.strip().str.lower()
    known = text.isin(_TRUE | _FALSE)
    missing = series.isna()
    return text.isin(_TRUE).where(known), ~known & ~missing


def normalise(frame: pd.DataFrame, file: str, rejects: Rejects) -> pd.DataFrame:
    """Map a raw frame onto TRACK_SCHEMA columns; bad rows go to ``rejects``. Returns valid rows."""
    out = pd.DataFrame(index=frame.index)
    reasons = pd.Series("", index=frame.index, dtype=object)

    def fail(mask: pd.Series, reason) -> None:
        mask = mask & (reasons == "")
        if mask.any():
            reasons[mask] = reason if isinstance(reason, str) else reason[mask]

    ids = _pick(frame, ID_COLUMNS)
    if ids is None:
        raise ValueError(f"{file}: no track id column (expected one of {', '.join(ID_COLUMNS)})")
    extracted = ids.astype(str).str.strip().str.extract(_ID, expand=False)
    fail(
        extracted.isna(),
        "track_id: " + ids.astype(str).str.slice(0, 60).radd("'").add("' is not a Spotify track ID or URI"),
    )
    out["track_id"] = extracted

    for col in ("name", "album"):
        values = _pick(frame, ALIASES[col])
        out[col] = values.astype(object).where(values.notna(), None) if values is not None else None
    for col in ("artists", "artist_ids", "genres"):
        values = _pick(frame, ALIASES[col])
        out[col] = values.map(_as_list) if values is not None else None

    duration = _pick(frame, ALIASES["duration_ms"])
    if duration is not None:
        number = pd.to_numeric(duration, errors="coerce")
        fail(duration.notna() & (number.isna() | (number < 0)), "duration_ms: not a non-negative number")
        out["duration_ms"] = number.round().astype("Int64")
    explicit = _pick(frame, ALIASES["explicit"])
    if explicit is not None:
        out["explicit"], bad = _parse_bool(explicit)
        fail(bad, "explicit: not true or false")
    year = _pick(frame, ALIASES["release_year"])
    if year is not None:
        number = pd.to_numeric(year.astype(str).str.slice(0, 4), errors="coerce")
        fail(
            year.notna() & (number.isna() | (number < 1900) | (number > 2100)),
            "release_year: not a year between 1900 and 2100",
        )
        out["release_year"] = number.astype("Int16")

    for feature in AUDIO_FEATURES:
        values = _pick(frame, (feature,))
        if values is None:
            out[feature] = np.nan
            continue
        number = pd.to_numeric(values, errors="coerce")
        fail(values.notna() & number.isna(), f"{feature}: not a number")
        low, high = AUDIO_FEATURE_RANGES[feature]
        outside = number.notna() & ((number < low) | (number > high))
        fail(outside, f"{feature}: " + number.astype(str) + f" is outside [{low}, {high}]")
        out[feature] = number

    bad = reasons != ""
    if bad.any():
        raws = frame.loc[bad].to_dict(orient="records")
        rejects.add_many(file, frame.index[bad] + 1, reasons[bad], raws)
    return out.loc[~bad]


def to_schema(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns and dtypes of TRACK_SCHEMA (missing columns null)."""
    out = pd.DataFrame({name: frame[name] if name in frame else None for name in TRACK_SCHEMA.names})
    for col in ("key", "mode", "time_signature"):
        out[col] = pd.to_numeric(out[col], errors="coerce").round().astype("Int8")
    for col in set(AUDIO_FEATURES) - {"key", "mode", "time_signature"}:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["duration_ms"] = pd.to_numeric(out["duration_ms"], errors="coerce").astype("Int64")
    out["release_year"] = pd.to_numeric(out["release_year"], errors="coerce").astype("Int16")
    out["explicit"] = out["explicit"].astype("boolean")
    return out.reset_index(drop=True)


def merge_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per track id: the first non-null value of each column, in input order."""
    if frame["track_id"].is_unique:
        return frame.reset_index(drop=True)
    return frame.groupby("track_id", sort=False, as_index=False).first()


def import_track_files(
    paths: Iterable[Path], source: str = "track_files", progress=None
) -> tuple[pd.DataFrame, ImportResult]:
    """Read, validate and merge track files. Returns the tracks (TRACK_SCHEMA) and the accounting."""
    result = ImportResult(source=source)
    frames = []
    for path in paths:
        raw = read_table(Path(path))
        result.read += len(raw)
        frames.append(normalise(raw, str(path), result.rejects))
        if progress is not None:
            progress(len(raw))
    valid = to_schema(pd.concat(frames, ignore_index=True)) if frames else to_schema(pd.DataFrame(columns=["track_id"]))
    tracks = merge_duplicates(valid)
    result.duplicates = len(valid) - len(tracks)
    result.accepted = len(tracks)
    result.extra["with_audio_features"] = int(tracks["energy"].notna().sum())
    return to_schema(tracks), result
