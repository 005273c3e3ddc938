"""What the importer looks up in the track catalog: durations, for the 80% completion rule, and
tracks by normalised artist and title, for account-data exports, which carry no track ids."""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

CATALOG_COLUMNS = ["track_id", "name", "artists", "duration_ms"]


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


def _name_keys(artist: pd.Series, title: pd.Series) -> pd.Series:
    return normalise_text(artist) + "\x00" + normalise_text(title)


class CatalogIndex:
    """A catalog frame (``CATALOG_COLUMNS``; None for none) indexed by track id and by normalised
    first artist and title."""

    def __init__(self, catalog: pd.DataFrame | None = None):
        catalog = catalog if catalog is not None else pd.DataFrame(columns=CATALOG_COLUMNS)
        self._track_ids = pa.array(catalog["track_id"].astype(str).to_numpy(dtype=object), pa.string())
        self._durations = pd.to_numeric(catalog["duration_ms"], errors="coerce").to_numpy(dtype=np.float64)
        first_artist = catalog["artists"].map(lambda a: a[0] if a is not None and len(a) else None)
        self._by_name = dict(zip(_name_keys(first_artist, catalog["name"]), catalog["track_id"]))

    def duration_of(self, track_id: pa.Array) -> np.ndarray:
        """Duration in ms (float) per track id; NaN for a track the catalog lacks or has no duration for."""
        idx = pc.index_in(track_id, value_set=self._track_ids).to_numpy(zero_copy_only=False)
        known = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(len(idx), bool)
        out = np.full(len(idx), np.nan)
        out[known] = self._durations[idx[known].astype(np.int64)]
        return out

    def match(self, artist: pd.Series, title: pd.Series) -> pd.Series:
        """The catalog's track id per (artist, title) pair, NaN where no track has that normalised name."""
        return _name_keys(artist, title).map(self._by_name)
