"""Listening history from Spotify's data exports, turned into feedback events with no PII left.

Two export kinds are read (each file a JSON array):

* **extended streaming history** (``Streaming_History_Audio_*.json``; older ``endsong_*.json``): ``ts``,
  ``ms_played``, ``spotify_track_uri``, track/artist/album names, ``reason_start``, ``reason_end``,
  ``shuffle``, ``skipped``, ``offline``, ``incognito_mode`` and PII (``ip_addr``, ``platform``,
  ``conn_country``; older files ``username``, ``ip_addr_decrypted``, ``user_agent_decrypted``);
* **account data** (``StreamingHistory_music_*.json``): ``endTime``, ``artistName``, ``trackName``,
  ``msPlayed``; tracks are matched to the catalog by normalised artist and title.

Each stream becomes one event:

* ``track_completed`` when ``reason_end`` is ``trackdone`` or at least 80% of a track of known duration
  was played;
* ``track_skipped`` when ``skipped`` is true, ``reason_end`` is ``fwdbtn``, or under 30 s were played;
* ``play`` otherwise.

Podcast and audiobook rows (no track URI) and incognito sessions are dropped. The export owner
(``username``, else the ``user`` argument, else the export's folder name) becomes a keyed pseudonym;
nothing else about the person is kept, and rejected rows are stored with PII fields removed. Event ids
are hashes of (user, time, track, ms played), so re-importing a file adds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import operator
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts.events import EVENT_SCHEMA
from core.ingest.result import ImportResult

PII_FIELDS = frozenset(
    {"ip_addr", "ip_addr_decrypted", "user_agent_decrypted", "username", "platform", "conn_country", "offline_timestamp"}
)
COMPLETED_SHARE = 0.8
PARALLEL_FROM_BYTES = 32 << 20  # below this, starting parsing processes costs more than it saves
SHORT_PLAY_MS = 30_000
_TRACK_URI = r"^spotify:track:[0-9A-Za-z]{22}$"

# The fields of an extended-history row we read; every other field (PII included) is never parsed.
EXTENDED_SCHEMA = pa.schema(
    [
        ("ts", pa.string()),
        ("ms_played", pa.int64()),
        ("spotify_track_uri", pa.string()),
        ("reason_end", pa.string()),
        ("skipped", pa.bool_()),
        ("incognito_mode", pa.bool_()),
        ("username", pa.string()),
        ("master_metadata_track_name", pa.string()),
        ("master_metadata_album_artist_name", pa.string()),
        ("master_metadata_album_album_name", pa.string()),
    ]
)


class _ExtendedRow(msgspec.Struct, gc=False):
    """The same fields for msgspec, which skips every other field without building Python objects
    (gc=False: a million untracked structs do not trigger a million-object garbage collection)."""

    ts: str | None = None
    ms_played: int | None = None
    spotify_track_uri: str | None = None
    reason_end: str | None = None
    skipped: bool | None = None
    incognito_mode: bool | None = None
    username: str | None = None
    master_metadata_track_name: str | None = None
    master_metadata_album_artist_name: str | None = None
    master_metadata_album_album_name: str | None = None


_ROWS = msgspec.json.Decoder(list[_ExtendedRow])
NAME_FIELDS = ("master_metadata_track_name", "master_metadata_album_artist_name", "master_metadata_album_album_name")
CORE_SCHEMA = pa.schema([f for f in EXTENDED_SCHEMA if f.name not in NAME_FIELDS])
_GETTERS = {name: operator.attrgetter(name) for name in EXTENDED_SCHEMA.names}


def normalise_text(text: pd.Series) -> pd.Series:
    """Lowercase, accents stripped, bracketed parts and 'feat.'/' - remaster' tails removed, punctuation
    dropped: what makes 'Beyoncé - Halo (Remastered 2019)' match 'beyonce halo'."""

    def one(value: object) -> str:
        if not isinstance(value, str):
            return ""
        value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode().lower()
        value = re.sub(r"\(.*?\)|\[.*?\]", " ", value)
        value = re.split(r"\s(?:feat\.?|ft\.?|featuring)\s|\s-\s", value)[0]
        return " ".join(re.sub(r"[^a-z0-9 ]+", " ", value).split())

    return text.map(one)


def _read_rows(raw: bytes, path: Path) -> list:
    data = orjson.loads(raw)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a Spotify export file is a JSON array of objects")
    return data


@dataclass
class ExtendedFile:
    """A parsed extended-history file: the columns every row needs, type problems found by the
    tolerant parser (None on the fast path), and the parsed rows, for the track-name columns that
    are only read for a track's first appearance."""

    table: pa.Table  # CORE_FIELDS
    problems: np.ndarray | None
    rows: list

    def names(self, positions: np.ndarray) -> dict[str, list]:
        if not self.rows or isinstance(self.rows[0], msgspec.Struct):
            return {f: [getattr(self.rows[i], f) for i in positions] for f in NAME_FIELDS}
        return {f: [v if isinstance(v := self.rows[i].get(f), str) else None for i in positions] for f in NAME_FIELDS}


def read_extended(raw: bytes, path: Path) -> ExtendedFile:
    """Parse an extended-history file.

    Fast path: typed decoding of only the fields above (measured faster here than Arrow's JSON reader,
    which must tokenise every field of these ~600-byte rows). A file with a value of the wrong type
    falls back to generic decoding, so that each bad row can be rejected on its own.
    """
    try:
        rows = _ROWS.decode(raw)
    except msgspec.ValidationError:
        return _read_extended_tolerant(_read_rows(raw, path))
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    columns = [pa.array(list(map(_GETTERS[f.name], rows)), type=f.type) for f in CORE_SCHEMA]
    return ExtendedFile(pa.Table.from_arrays(columns, schema=CORE_SCHEMA), None, rows)


def _read_extended_tolerant(rows: list) -> ExtendedFile:
    problems = np.full(len(rows), "", dtype=object)
    columns = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problems[i] = "row: not a JSON object"
    for field in CORE_SCHEMA:
        values = [row.get(field.name) if isinstance(row, dict) else None for row in rows]
        if pa.types.is_boolean(field.type):
            ok = [v is None or isinstance(v, bool) for v in values]
            problem = f"{field.name}: not true or false"
        elif pa.types.is_integer(field.type):
            ok = [v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v == v and v >= 0) for v in values]
            values = [int(v) if good and v is not None else None for v, good in zip(values, ok)]
            problem = f"{field.name}: not a non-negative number"
        else:
            ok = [v is None or isinstance(v, str) for v in values]
            problem = f"{field.name}: not a string"
        bad = ~np.array(ok, dtype=bool)
        problems[bad & (problems == "")] = problem
        columns[field.name] = pa.array([v if good else None for v, good in zip(values, ok)], type=field.type)
    return ExtendedFile(pa.table(columns, schema=CORE_SCHEMA), problems, rows)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


# powers of the 64-bit FNV prime, wrapping: a polynomial hash over the 22 bytes of a Spotify id
_ID_WEIGHTS = np.cumprod(np.full(22, 1099511628211, dtype=np.uint64), dtype=np.uint64)


def _track_hashes(track_id: pa.StringArray) -> np.ndarray:
    """A stable 64-bit value per (validated, 22-character) track id, straight from Arrow's bytes."""
    n = len(track_id)
    offsets = np.frombuffer(track_id.buffers()[1], dtype=np.int32)[track_id.offset : track_id.offset + n + 1]
    data = np.frombuffer(track_id.buffers()[2], dtype=np.uint8)
    block = data[offsets[0] : offsets[0] + 22 * n].reshape(n, 22).astype(np.uint64)
    with np.errstate(over="ignore"):
        return (block * _ID_WEIGHTS).sum(axis=1, dtype=np.uint64)


def _string_hashes(strings: pa.Array) -> np.ndarray:
    """A stable 64-bit value per string (Python's hash() is salted), computed once per distinct value."""
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


def _event_ids(user_hash: np.ndarray, timestamp_ms: np.ndarray, track_hash: np.ndarray, ms_played: np.ndarray) -> pa.Array:
    """Deterministic ids from (user, time, track, ms played): the same stream imported twice is one event."""
    h = _mix(user_hash, timestamp_ms.astype(np.int64).view(np.uint64), track_hash, ms_played.astype(np.int64).view(np.uint64))
    return _hex_ids(h)


def _hex_ids(h: np.ndarray) -> pa.Array:
    """'sh-' + 16 hex digits per value, built as one Arrow buffer (no Python string per row)."""
    n = len(h)
    digits = np.frombuffer(h.astype(">u8").tobytes().hex().encode(), dtype=np.uint8).reshape(n, 16)
    body = np.empty((n, 19), dtype=np.uint8)
    body[:, :3] = np.frombuffer(b"sh-", dtype=np.uint8)
    body[:, 3:] = digits
    offsets = np.arange(0, 19 * (n + 1), 19, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(body.tobytes()))


def _constant(value: str, n: int) -> pa.Array:
    """A string column of one value, without a Python object per row."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int8)), pa.array([value])).cast(pa.string())


KINDS = pa.array(["track_completed", "track_skipped", "play"])


def _classify(trackdone: np.ndarray, skipped: np.ndarray, fwdbtn: np.ndarray, ms: np.ndarray, duration: np.ndarray) -> pa.Array:
    """Event type per stream (see the module docstring), as an Arrow string column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        completed = trackdone | (ms / duration >= COMPLETED_SHARE)
    skip = skipped | fwdbtn | (ms < SHORT_PLAY_MS)
    codes = np.where(completed, 0, np.where(skip, 1, 2)).astype(np.int8)
    return pa.DictionaryArray.from_arrays(pa.array(codes), KINDS).cast(pa.string())


def _flag(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(bool)


class HistoryImporter:
    """Import export files for one catalog (frame with track_id, name, artists, duration_ms): the
    catalog gives durations for the 80% rule and the names account-data exports are matched against."""

    def __init__(self, pseudonymize: Callable[[str], str], catalog: pd.DataFrame | None = None, source: str = "spotify_history"):
        self.pseudonymize = pseudonymize
        self.source = source
        catalog = catalog if catalog is not None else pd.DataFrame(columns=["track_id", "name", "artists", "duration_ms"])
        self._catalog_ids = pa.array(catalog["track_id"].astype(str).to_numpy(dtype=object), pa.string())
        self._durations = pd.to_numeric(catalog["duration_ms"], errors="coerce").to_numpy(dtype=np.float64)
        self.durations = pd.Series(self._durations, index=catalog["track_id"].astype(str).to_numpy())
        first_artist = catalog["artists"].map(lambda a: a[0] if a is not None and len(a) else None)
        keys = normalise_text(first_artist) + "\x00" + normalise_text(catalog["name"])
        self._by_name = dict(zip(keys, catalog["track_id"]))
        self._seen_tracks: set[int] = set()  # hashes of tracks whose metadata an earlier file gave

    def duration_of(self, track_id: pa.Array) -> np.ndarray:
        idx = pc.index_in(track_id, value_set=self._catalog_ids).to_numpy(zero_copy_only=False)
        known = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(len(idx), bool)
        out = np.full(len(idx), np.nan)
        out[known] = self._durations[idx[known].astype(np.int64)]
        return out

    def run(
        self, paths: Iterable[Path], user: str | None = None, progress=None, workers: int | None = None
    ) -> tuple[pa.Table, pd.DataFrame, ImportResult]:
        """Returns (events as an EVENT_SCHEMA arrow table, track metadata seen in the exports, accounting).

        Files are parsed in ``workers`` processes, since parsing JSON is the cost and it holds the GIL.
        Default: one per core (at most 4) when there is more than ``PARALLEL_FROM_BYTES`` to read, else 1.
        """
        jobs = [(Path(p), user or Path(p).parent.name or "listener") for p in paths]
        if workers is None:
            size = sum(path.stat().st_size for path, _ in jobs)
            workers = min(len(jobs), os.cpu_count() or 1, 4) if size >= PARALLEL_FROM_BYTES else 1
        result = ImportResult(source=self.source)
        events, tracks = [], []
        with contextlib.ExitStack() as stack:
            if workers > 1:
                pool = stack.enter_context(
                    ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_start_worker, initargs=(self,))
                )
                outcomes = pool.map(_import_in_worker, jobs)
            else:
                outcomes = (self.import_file(path, owner) for path, owner in jobs)
            for frame, meta, one in outcomes:
                _add_up(result, one)
                events.append(frame)
                tracks.append(meta)
                if progress is not None:
                    progress(one.read)
        all_events = pa.concat_tables(events) if events else EVENT_SCHEMA.empty_table()
        first = ~pd.Series(all_events["event_id"].to_numpy(zero_copy_only=False)).duplicated().to_numpy()
        unique = all_events.filter(pa.array(first))
        result.duplicates = len(all_events) - len(unique)
        result.accepted = len(unique)
        if result.extra.get("account_data_rows"):
            result.extra["account_data_match_rate"] = round(result.extra.pop("account_data_matched") / result.extra.pop("account_data_rows"), 4)
        result.extra["users"] = len(pc.unique(unique["user_id"]))
        meta = pd.concat(tracks, ignore_index=True).drop_duplicates("track_id") if tracks else pd.DataFrame(columns=["track_id"])
        return unique, meta, result

    def import_file(self, path: Path, owner: str) -> tuple[pa.Table, pd.DataFrame, ImportResult]:
        """One export file: its events, the tracks it names, and its own accounting."""
        result = ImportResult(source=self.source)
        result.extra.update({"dropped_podcasts": 0, "dropped_incognito": 0})
        raw = path.read_bytes()
        if b'"endTime"' in raw[:4096]:  # the account-data export
            rows = _read_rows(raw, path)
            frame, found = self._account_data(rows, path, owner, result)
            result.extra.update({"account_data_matched": found, "account_data_rows": len(rows)})
            result.read = len(rows)
            return frame, pd.DataFrame(columns=["track_id"]), result
        parsed = read_extended(raw, path)
        frame, meta = self._extended(parsed, path, owner, result)
        result.read = len(parsed.table)
        return frame, meta, result

    # --- extended streaming history ------------------------------------------------------------
    def _extended(self, parsed: ExtendedFile, path: Path, owner: str, result: ImportResult) -> tuple[pa.Table, pd.DataFrame]:
        table = parsed.table
        uri = table["spotify_track_uri"]
        podcast = pc.is_null(uri).to_numpy(zero_copy_only=False)
        incognito = _flag(table["incognito_mode"]) & ~podcast
        result.dropped += int(podcast.sum() + incognito.sum())
        result.extra["dropped_podcasts"] += int(podcast.sum())
        result.extra["dropped_incognito"] += int(incognito.sum())

        timestamp = pc.strptime(table["ts"], format="%Y-%m-%dT%H:%M:%SZ", unit="ms", error_is_null=True)
        ts_ms = pc.fill_null(timestamp.cast(pa.int64()), -1).to_numpy(zero_copy_only=False).copy()
        odd = (ts_ms < 0) & pc.is_valid(table["ts"]).to_numpy(zero_copy_only=False)
        if odd.any():  # other ISO-8601 spellings (fractions, offsets): the slow parser, for those rows only
            texts = pd.Series(table["ts"].to_numpy(zero_copy_only=False)[odd])
            parsed_ts = pd.to_datetime(texts, utc=True, errors="coerce", format="ISO8601").dt.tz_localize(None)
            ts_ms[odd] = parsed_ts.to_numpy(dtype="datetime64[ms]").astype(np.int64)  # NaT stays negative: rejected below
        ms = pc.fill_null(table["ms_played"], -1).to_numpy(zero_copy_only=False)
        # 'spotify:track:' + 22 ASCII letters or digits, without a regex per row
        tail = pc.utf8_slice_codeunits(uri, 14)
        valid_uri = _flag(pc.and_(pc.and_(pc.starts_with(uri, "spotify:track:"), pc.equal(pc.binary_length(uri), 36)), pc.ascii_is_alnum(tail)))
        checks = [("ms_played: not a non-negative number", ms < 0), ("ts: not an ISO-8601 timestamp", ts_ms < 0),
                  ("spotify_track_uri: not a spotify:track: URI", ~valid_uri)]  # fmt: skip
        bad = np.zeros(len(table), dtype=bool) if parsed.problems is None else parsed.problems != ""
        for _, failed in checks:
            bad |= failed
        bad &= ~(podcast | incognito)  # dropped rows are not judged
        if bad.any():
            positions = np.flatnonzero(bad)
            reasons = []
            for i in positions:
                reason = parsed.problems[i] if parsed.problems is not None and parsed.problems[i] else ""
                reasons.append(reason or next(text for text, failed in checks if failed[i]))
            raws = [{k: v for k, v in row.items() if k not in PII_FIELDS} for row in table.take(pa.array(positions)).to_pylist()]
            result.rejects.add_many(str(path), pd.Series(positions + 1), pd.Series(reasons), raws)
        keep_np = ~(podcast | incognito | bad)
        keep = pa.array(keep_np)
        kept = table.filter(keep)
        ts_ms, ms = ts_ms[keep_np], ms[keep_np]
        n = len(kept)

        users = pc.fill_null(kept["username"], owner).combine_chunks().dictionary_encode()
        pseudonyms = pa.array([self.pseudonymize(u) for u in users.dictionary.to_pylist()], pa.string())
        user_id = pseudonyms.take(users.indices)
        track_id = tail.filter(keep).combine_chunks() if isinstance(tail, pa.ChunkedArray) else tail.filter(keep)
        track_hash = _track_hashes(track_id)
        kinds = _classify(
            _flag(pc.equal(kept["reason_end"], "trackdone")), _flag(kept["skipped"]),
            _flag(pc.equal(kept["reason_end"], "fwdbtn")), ms, self.duration_of(track_id),
        )  # fmt: skip
        events = pa.Table.from_arrays(
            [
                _event_ids(_string_hashes(user_id), ts_ms, track_hash, ms),
                user_id,
                track_id,
                kinds,
                pa.array(ts_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                pa.array(ms, pa.int64()),
                *[pa.nulls(n, EVENT_SCHEMA.field(c).type) for c in ("rating", "request_id", "algorithm", "model_version", "experiment_id", "variant", "position")],
                _constant(self.source, n),
            ],
            schema=EVENT_SCHEMA,
        )
        # track metadata, one row per track not seen in an earlier file (its first appearance)
        _, first = np.unique(track_hash, return_index=True)
        first = np.array([i for i in first if int(track_hash[i]) not in self._seen_tracks], dtype=np.int64)
        self._seen_tracks.update(int(h) for h in track_hash[first])
        names = parsed.names(np.flatnonzero(keep_np)[first])
        meta = pd.DataFrame(
            {
                "track_id": track_id.take(pa.array(first)).to_pylist(),
                "name": names["master_metadata_track_name"],
                "artists": [[a] if isinstance(a, str) else None for a in names["master_metadata_album_artist_name"]],
                "album": names["master_metadata_album_album_name"],
            }
        )
        return events, meta

    # --- account data export -----------------------------------------------------------------
    def _account_data(self, rows: list, path: Path, owner: str, result: ImportResult) -> tuple[pa.Table, int]:
        def column(key: str) -> list:
            return [row.get(key) if isinstance(row, dict) else None for row in rows]

        frame = pd.DataFrame({"end": column("endTime"), "artist": column("artistName"), "track": column("trackName"), "ms": column("msPlayed")})
        timestamp = pd.to_datetime(frame["end"], utc=True, errors="coerce", format="mixed")
        ms = pd.to_numeric(frame["ms"], errors="coerce")
        reasons = pd.Series("", index=frame.index, dtype=object)
        reasons[(ms.isna() | (ms < 0)) & (reasons == "")] = "msPlayed: not a non-negative number"
        reasons[timestamp.isna() & (reasons == "")] = "endTime: not a timestamp"
        reasons[(frame["artist"].isna() | frame["track"].isna()) & (reasons == "")] = "artistName/trackName: missing"
        bad = reasons != ""
        if bad.any():
            raws = [{k: v for k, v in rows[i].items() if k not in PII_FIELDS} if isinstance(rows[i], dict) else rows[i] for i in np.flatnonzero(bad)]
            result.rejects.add_many(str(path), frame.index[bad] + 1, reasons[bad], raws)
        track_id = (normalise_text(frame["artist"]) + "\x00" + normalise_text(frame["track"])).map(self._by_name)
        unmatched = ~bad & track_id.isna()
        result.dropped += int(unmatched.sum())
        result.extra["dropped_unmatched"] = result.extra.get("dropped_unmatched", 0) + int(unmatched.sum())
        use = (~bad & track_id.notna()).to_numpy()
        n = int(use.sum())
        tracks = pa.array(track_id[use].to_numpy(dtype=object), pa.string())
        user_id = pa.array(np.full(n, self.pseudonymize(owner), dtype=object), pa.string())
        ts_ms = timestamp[use].astype("int64").to_numpy() // 1_000_000
        ms_played = ms[use].to_numpy().astype(np.int64)
        none = np.zeros(n, dtype=bool)
        kinds = _classify(none, none, none, ms_played, self.duration_of(tracks))
        events = pd.DataFrame(
            {
                "event_id": _event_ids(_string_hashes(user_id), ts_ms, _track_hashes(tracks), ms_played).to_numpy(zero_copy_only=False),
                "user_id": user_id.to_numpy(zero_copy_only=False),
                "track_id": tracks.to_numpy(zero_copy_only=False),
                "type": kinds.to_numpy(zero_copy_only=False),
                "timestamp": pd.to_datetime(ts_ms, unit="ms", utc=True),
                "ms_played": ms_played,
            }
        )
        return self._to_schema(events), n

    def _to_schema(self, events: pd.DataFrame) -> pa.Table:
        """An EVENT_SCHEMA table from a pandas frame of the columns we know."""
        n = len(events)
        arrays = []
        for field in EVENT_SCHEMA:
            if field.name in events:
                arrays.append(pa.Array.from_pandas(events[field.name], type=field.type))
            elif field.name == "source":
                arrays.append(pa.array(np.full(n, self.source, dtype=object), type=field.type))
            else:
                arrays.append(pa.nulls(n, type=field.type))
        return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _add_up(total: ImportResult, one: ImportResult) -> None:
    total.read += one.read
    total.dropped += one.dropped
    total.rejects.rows += one.rejects.rows
    for key, value in one.extra.items():
        total.extra[key] = total.extra.get(key, 0) + value


_WORKER: HistoryImporter | None = None


def _pool_context():
    # fork: workers start at once with everything imported (spawn re-imports pandas and pyarrow, ~1.5 s
    # per import run). Workers only parse and compute, taking no lock another thread could hold.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _start_worker(importer: HistoryImporter) -> None:
    global _WORKER
    _WORKER = importer


def _import_in_worker(job: tuple[Path, str]) -> tuple[pa.Table, pd.DataFrame, ImportResult]:
    return _WORKER.import_file(*job)
