"""What the API holds in memory for one model version: the item table, item vectors, similarity and
content vectors, precomputed filter columns, the popularity order (every row, most popular first,
sorted once at load so a popularity list walks it instead of ranking the catalog per request), a few
recent filter masks and, for large catalogs, the version's ANN index (:mod:`models.ann`). User vectors
stay in Redis."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from core.vectorstore import PublishedVersion
from models.ann import CatalogIndex, ScoreMoments
from models.features import catalog_audio, catalog_content, unit_rows

MASK_CACHE = 8  # (genres, explicit) masks kept per loaded version: 8 x n_items bytes at most


@dataclass
class LoadedModel:
    version: str
    algorithm: str
    items: pd.DataFrame
    vectors: np.ndarray  # float32 (n_items, d): score = vectors @ user_vector
    similarity: np.ndarray  # float32 (n_items, k), unit rows: cosine between items
    content: np.ndarray  # float32 (n_items, f), unit rows: audio features + genres (cold start)
    popularity: np.ndarray  # float32 (n_items,)
    index: dict[str, int]  # track id -> row
    explicit: np.ndarray  # bool (n_items,)
    features: dict[str, np.ndarray]  # audio feature -> float32 (NaN where unknown)
    artist_rows: dict[str, np.ndarray]  # artist id -> item rows
    genre_rows: dict[str, np.ndarray]  # lower-cased genre -> item rows: the version's genre vocabulary
    first_artist: np.ndarray  # int code of each item's first artist (diversity)
    meta: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    # response columns as plain arrays (indexing a DataFrame per request costs more than the ranking)
    track_ids: list = field(default=None, repr=False)  # type: ignore[assignment]
    names: list = field(default=None, repr=False)  # type: ignore[assignment]
    artist_names: list = field(default=None, repr=False)  # type: ignore[assignment]
    genre_names: list = field(default=None, repr=False)  # type: ignore[assignment]
    # the version's ANN index (None: every request scores exactly) and the score moments /similar needs with it
    ann: CatalogIndex | None = field(default=None, repr=False)
    vector_moments: ScoreMoments | None = field(default=None, repr=False)
    similarity_moments: ScoreMoments | None = field(default=None, repr=False)
    # every row, most popular first (ties by row): popularity lists walk it (see serving.retrieval.select_popular)
    popularity_order: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        items = self.items
        self.popularity_order = np.argsort(-self.popularity, kind="stable").astype(np.int64)
        # masks of the few (genres, explicit) filters asked most recently, read-only and shared by requests:
        # building one is a pass over the catalog (about 0.2 ms at 1M tracks), the cache makes it a lookup
        self.catalog_mask = functools.lru_cache(maxsize=MASK_CACHE)(self._catalog_mask)
        # plain lists of JSON-ready values: responses index them per track
        self.track_ids = items["track_id"].astype(str).tolist()
        self.names = [
            n if isinstance(n, str) else None for n in (items["name"] if "name" in items else [None] * len(items))
        ]
        self.artist_names = [
            [] if a is None else [str(x) for x in a]
            for a in (items["artists"] if "artists" in items else [None] * len(items))
        ]
        self.genre_names = [
            [] if g is None else [str(x) for x in g]
            for g in (items["genres"] if "genres" in items else [None] * len(items))
        ]

    @classmethod
    def from_published(cls, published: PublishedVersion) -> LoadedModel:
        items = published.items.reset_index(drop=True)
        n = len(items)
        vectors = np.ascontiguousarray(published.item_vectors, dtype=np.float32)
        similarity = published.similarity_vectors if published.similarity_vectors is not None else vectors
        popularity = (
            items["popularity"].to_numpy(dtype=np.float32) if "popularity" in items else np.zeros(n, np.float32)
        )
        features = catalog_audio(items)
        genres = items["genres"] if "genres" in items else pd.Series([None] * n)
        artist_lists = items["artist_ids"] if "artist_ids" in items else pd.Series([None] * n)
        artist_rows: dict[str, list[int]] = {}
        first_artist = np.full(n, -1, dtype=np.int64)
        codes: dict[str, int] = {}
        for row, artists in enumerate(artist_lists):
            if artists is None or not len(artists):
                continue
            for artist in artists:
                artist_rows.setdefault(str(artist), []).append(row)
            first_artist[row] = codes.setdefault(str(artists[0]), len(codes))
        by_genre: dict[str, list[int]] = {}
        for row, names in enumerate(genres):
            if names is not None:
                for name in {str(g).lower() for g in names}:
                    by_genre.setdefault(name, []).append(row)
        return cls(
            version=published.version,
            algorithm=published.meta.get("algorithm", "unknown"),
            items=items,
            vectors=vectors,
            similarity=unit_rows(np.asarray(similarity, dtype=np.float32)),
            content=catalog_content(items, features),
            popularity=popularity,
            index={t: i for i, t in enumerate(items["track_id"].astype(str))},
            explicit=items["explicit"].fillna(False).astype(bool).to_numpy()
            if "explicit" in items
            else np.zeros(n, bool),
            features=features,
            artist_rows={a: np.array(r, dtype=np.int64) for a, r in artist_rows.items()},
            genre_rows={g: np.array(r, dtype=np.int64) for g, r in by_genre.items()},
            first_artist=first_artist,
            meta=published.meta,
        )

    def attach_index(self, index: CatalogIndex) -> None:
        """Serve through ``index`` from now on: it must be built from this version's vectors (a catalog
        extended since has more rows; those are scored exactly). The index is set last, in one
        assignment: a request sees it with everything it needs, or not at all."""
        if index.items.dimensions != self.vectors.shape[1] or index.items.rows > self.n_items:
            raise ValueError(
                f"ANN index of {index.items.rows} x {index.items.dimensions} does not fit model version {self.version} "
                f"({self.n_items} x {self.vectors.shape[1]}): rebuild it from this version's vectors"
            )
        content = index.content
        if content is not None and (content.dimensions != self.content.shape[1] or content.rows > self.n_items):
            # the catalog's genres changed since the release (a genre new to it adds a column): scored exactly
            index = replace(index, content=None)
        self.vector_moments = ScoreMoments.of(self.vectors)
        self.similarity_moments = ScoreMoments.of(self.similarity)
        self.ann = index

    @property
    def n_items(self) -> int:
        return len(self.items)

    def rows(self, track_ids) -> np.ndarray:
        return np.fromiter((self.index[t] for t in track_ids if t in self.index), dtype=np.int64)

    def genre_mask(self, genres: Iterable[str]) -> np.ndarray:
        """Items of any of ``genres`` (case-insensitive), read-only. The genres come from a vocabulary
        built once when the version is loaded: a genre the catalog does not have matches nothing and costs
        one dict lookup, so a client sending thousands of made-up genres leaves nothing behind (nor in the
        mask cache: its key holds only the genres the catalog has)."""
        return self.catalog_mask(self._known_genres(genres), None)

    def genre_and_explicit_mask(self, genres: Iterable[str], explicit: bool | None) -> np.ndarray | None:
        """Items of any of ``genres`` (all when empty) and, with ``explicit`` False, not explicit;
        read-only, from the cache when asked recently. None: no restriction."""
        known = self._known_genres(genres) if genres else None
        if known is None and explicit is not False:
            return None
        return self.catalog_mask(known, explicit is False)

    def _known_genres(self, genres: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted({g.lower() for g in genres if g.lower() in self.genre_rows}))

    def _catalog_mask(self, genres: tuple[str, ...] | None, clean: bool | None) -> np.ndarray:
        if genres is None:
            mask = np.ones(self.n_items, dtype=bool)
        else:
            mask = np.zeros(self.n_items, dtype=bool)
            for genre in genres:
                mask[self.genre_rows[genre]] = True
        if clean:
            mask &= ~self.explicit
        mask.flags.writeable = False
        return mask
