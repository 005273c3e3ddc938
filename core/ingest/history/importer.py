"""Export files in, feedback events out: dropping podcasts, incognito sessions and PII, rejecting bad
rows with their reasons, classifying each stream (see the package docstring) and, for large imports,
parsing files in a pool of processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts.events import EVENT_SCHEMA
from core.ingest.history.catalog_index import CatalogIndex
from core.ingest.history.event_ids import track_hashes
from core.ingest.history.event_table import build_event_table, constant_column
from core.ingest.history.parsing import AccountDataFile, ExtendedFile, is_account_data, read_account_data, read_extended
from core.ingest.result import ImportResult

PII_FIELDS = frozenset(
    {
        "ip_addr",
        "ip_addr_decrypted",
        "user_agent_decrypted",
        "username",
        "platform",
        "conn_country",
        "offline_timestamp",
    }
)
COMPLETED_SHARE = 0.8
PARALLEL_FROM_BYTES = 32 << 20  # below this, starting parsing processes costs more than it saves
SHORT_PLAY_MS = 30_000
KINDS = pa.array(["track_completed", "track_skipped", "play"])


def _classify(
    trackdone: np.ndarray, skipped: np.ndarray, fwdbtn: np.ndarray, ms: np.ndarray, duration: np.ndarray
) -> pa.Array:
    """Event type per stream (the rule in the package docstring), as an Arrow string column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        completed = trackdone | (ms / duration >= COMPLETED_SHARE)
    skip = skipped | fwdbtn | (ms < SHORT_PLAY_MS)
    codes = np.where(completed, 0, np.where(skip, 1, 2)).astype(np.int8)
    return pa.DictionaryArray.from_arrays(pa.array(codes), KINDS).cast(pa.string())


def _flag(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(bool)


class HistoryImporter:
    """Import export files for one catalog (frame with track_id, name, artists, duration_ms): the
    catalog gives durations for the 80% rule and the names account-data exports are matched against.
    ``pseudonymize`` maps a listener's identity to the user id stored."""

    def __init__(
        self, pseudonymize: Callable[[str], str], catalog: pd.DataFrame | None = None, source: str = "spotify_history"
    ):
        self.pseudonymize = pseudonymize
        self.source = source
        self.catalog = CatalogIndex(catalog)
        self._seen_tracks: set[int] = set()  # hashes of tracks whose metadata an earlier file gave

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
                    ProcessPoolExecutor(
                        workers, mp_context=_pool_context(), initializer=_start_worker, initargs=(self,)
                    )
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
            result.extra["account_data_match_rate"] = round(
                result.extra.pop("account_data_matched") / result.extra.pop("account_data_rows"), 4
            )
        result.extra["users"] = len(pc.unique(unique["user_id"]))
        meta = (
            pd.concat(tracks, ignore_index=True).drop_duplicates("track_id")
            if tracks
            else pd.DataFrame(columns=["track_id"])
        )
        return unique, meta, result

    def import_file(self, path: Path, owner: str) -> tuple[pa.Table, pd.DataFrame, ImportResult]:
        """One export file, ``owner`` standing for its listener where rows name none: its events, the
        tracks it names, and its own accounting."""
        result = ImportResult(source=self.source)
        result.extra.update({"dropped_podcasts": 0, "dropped_incognito": 0})
        raw = path.read_bytes()
        if is_account_data(raw):
            account = read_account_data(raw, path)
            frame, found = self._account_data(account, path, owner, result)
            result.extra.update({"account_data_matched": found, "account_data_rows": len(account.rows)})
            result.read = len(account.rows)
            return frame, pd.DataFrame(columns=["track_id"]), result
        parsed = read_extended(raw, path)
        frame, meta = self._extended(parsed, path, owner, result)
        result.read = len(parsed.table)
        return frame, meta, result

    # --- extended streaming history ------------------------------------------------------------
    def _extended(
        self, parsed: ExtendedFile, path: Path, owner: str, result: ImportResult
    ) -> tuple[pa.Table, pd.DataFrame]:
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
            ts_ms[odd] = parsed_ts.to_numpy(dtype="datetime64[ms]").astype(
                np.int64
            )  # NaT stays negative: rejected below
        ms = pc.fill_null(table["ms_played"], -1).to_numpy(zero_copy_only=False)
        # 'spotify:track:' + 22 ASCII letters or digits, without a regex per row
        tail = pc.utf8_slice_codeunits(uri, 14)
        valid_uri = _flag(
            pc.and_(
                pc.and_(pc.starts_with(uri, "spotify:track:"), pc.equal(pc.binary_length(uri), 36)),
                pc.ascii_is_alnum(tail),
            )
        )
        checks = [
            ("ms_played: not a non-negative number", ms < 0),
            ("ts: not an ISO-8601 timestamp", ts_ms < 0),
            ("spotify_track_uri: not a spotify:track: URI", ~valid_uri),
        ]
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
            rejected = table.take(pa.array(positions)).to_pylist()
            raws = [{k: v for k, v in row.items() if k not in PII_FIELDS} for row in rejected]
            # each row under its listener's pseudonym (as their events are stored): an erasure finds it
            users = [self.pseudonymize(row.get("username") or owner) for row in rejected]
            result.rejects.add_many(str(path), pd.Series(positions + 1), pd.Series(reasons), raws, users)
        keep_np = ~(podcast | incognito | bad)
        keep = pa.array(keep_np)
        kept = table.filter(keep)
        ts_ms, ms = ts_ms[keep_np], ms[keep_np]

        users = pc.fill_null(kept["username"], owner).combine_chunks().dictionary_encode()
        pseudonyms = pa.array([self.pseudonymize(u) for u in users.dictionary.to_pylist()], pa.string())
        user_id = pseudonyms.take(users.indices)
        track_id = tail.filter(keep).combine_chunks() if isinstance(tail, pa.ChunkedArray) else tail.filter(keep)
        track_hash = track_hashes(track_id)
        kinds = _classify(
            _flag(pc.equal(kept["reason_end"], "trackdone")),
            _flag(kept["skipped"]),
            _flag(pc.equal(kept["reason_end"], "fwdbtn")),
            ms,
            self.catalog.duration_of(track_id),
        )
        events = build_event_table(user_id, ts_ms, track_id, ms, kinds, self.source, track_hash)
        return events, self._new_tracks(parsed, np.flatnonzero(keep_np), track_id, track_hash)

    def _new_tracks(
        self, parsed: ExtendedFile, kept_rows: np.ndarray, track_id: pa.StringArray, track_hash: np.ndarray
    ) -> pd.DataFrame:
        """Track metadata, one row per track not seen in an earlier file (from its first appearance)."""
        _, first = np.unique(track_hash, return_index=True)
        first = np.array([i for i in first if int(track_hash[i]) not in self._seen_tracks], dtype=np.int64)
        self._seen_tracks.update(int(h) for h in track_hash[first])
        names = parsed.names(kept_rows[first])
        return pd.DataFrame(
            {
                "track_id": track_id.take(pa.array(first)).to_pylist(),
                "name": names["master_metadata_track_name"],
                "artists": [[a] if isinstance(a, str) else None for a in names["master_metadata_album_artist_name"]],
                "album": names["master_metadata_album_album_name"],
            }
        )

    # --- account data export -----------------------------------------------------------------
    def _account_data(
        self, account: AccountDataFile, path: Path, owner: str, result: ImportResult
    ) -> tuple[pa.Table, int]:
        ms, timestamp = account.ms_played, account.timestamp
        reasons = pd.Series("", index=ms.index, dtype=object)
        reasons[(ms.isna() | (ms < 0)) & (reasons == "")] = "msPlayed: not a non-negative number"
        reasons[timestamp.isna() & (reasons == "")] = "endTime: not a timestamp"
        reasons[(account.artist.isna() | account.track.isna()) & (reasons == "")] = "artistName/trackName: missing"
        bad = (reasons != "").to_numpy()
        if bad.any():
            positions = np.flatnonzero(bad)
            rows = account.rows
            raws = [
                {k: v for k, v in rows[i].items() if k not in PII_FIELDS} if isinstance(rows[i], dict) else rows[i]
                for i in positions
            ]
            users = [self.pseudonymize(owner)] * len(raws)
            result.rejects.add_many(str(path), pd.Series(positions + 1), reasons[bad], raws, users)
        track_id = self.catalog.match(account.artist, account.track)
        unmatched = ~bad & track_id.isna().to_numpy()
        result.dropped += int(unmatched.sum())
        result.extra["dropped_unmatched"] = result.extra.get("dropped_unmatched", 0) + int(unmatched.sum())
        use = ~bad & track_id.notna().to_numpy()
        n = int(use.sum())
        tracks = pa.array(track_id[use].to_numpy(dtype=object), pa.string())
        ts_ms = timestamp[use].dt.as_unit("ns").astype("int64").to_numpy() // 1_000_000
        ms_played = ms[use].to_numpy().astype(np.int64)
        none = np.zeros(n, dtype=bool)
        kinds = _classify(none, none, none, ms_played, self.catalog.duration_of(tracks))
        user_id = constant_column(self.pseudonymize(owner), n)
        return build_event_table(user_id, ts_ms, tracks, ms_played, kinds, self.source), n


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
