"""Request filters and context, and how they turn into masks over a loaded model's items."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from core.contracts.ids import parse_track_id
from models.features import CONTINUOUS_FEATURES
from serving.loaded_model import LoadedModel

MAX_LIST = 200
# every string a client sends has a length cap, named in the 422 when it is exceeded
Genre = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ArtistId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TrackRef = Annotated[str, StringConstraints(min_length=1, max_length=100)]  # an id, URI or open.spotify.com URL
AlgorithmName = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class FeatureRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FeatureRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class RecommendationFilters(BaseModel):
    """Hard constraints on what may be recommended."""

    model_config = ConfigDict(extra="forbid")

    genres: list[Genre] = Field(
        default_factory=list, max_length=50, description="Only tracks with at least one of these genres."
    )
    explicit: bool | None = Field(None, description="false: no explicit tracks.")
    audio: dict[str, FeatureRange] = Field(
        default_factory=dict, description='Audio feature ranges, e.g. {"tempo": {"min": 100}}.'
    )
    exclude_tracks: list[TrackRef] = Field(default_factory=list, max_length=MAX_LIST)
    exclude_artists: list[ArtistId] = Field(
        default_factory=list, max_length=MAX_LIST, description="Spotify artist ids."
    )
    exclude_played: bool = Field(True, description="Leave out tracks the user already played.")
    max_per_artist: int | None = Field(
        None, ge=1, le=100, description="Diversity: at most this many tracks per artist."
    )

    @field_validator("audio")
    @classmethod
    def _known_features(cls, value: dict[str, FeatureRange]) -> dict[str, FeatureRange]:
        unknown = sorted(set(value) - set(CONTINUOUS_FEATURES))
        if unknown:
            raise ValueError(f"unknown audio features {unknown}; filterable: {', '.join(CONTINUOUS_FEATURES)}")
        return value

    @field_validator("exclude_tracks")
    @classmethod
    def _track_ids(cls, value: list[str]) -> list[str]:
        return [parse_track_id(v) for v in value]

    @property
    def restricts_items(self) -> bool:
        return bool(self.genres or self.explicit is False or self.audio or self.exclude_artists)


class RecommendationContext(BaseModel):
    """Soft information about the moment, used when the user has no history of their own."""

    model_config = ConfigDict(extra="forbid")

    seed_tracks: list[TrackRef] = Field(
        default_factory=list, max_length=50, description="Tracks to start from (cold start)."
    )
    genres: list[Genre] = Field(default_factory=list, max_length=20, description="Genres to start from (cold start).")

    @field_validator("seed_tracks")
    @classmethod
    def _track_ids(cls, value: list[str]) -> list[str]:
        return [parse_track_id(v) for v in value]


def allowed_mask(model: LoadedModel, filters: RecommendationFilters) -> np.ndarray | None:
    """Boolean mask of items the filters allow, or None when they allow everything. Read-only when it
    is the version's cached (genres, explicit) mask; audio ranges and excluded artists, which vary per
    request, are applied to a copy."""
    if not filters.restricts_items:
        return None
    base = model.genre_and_explicit_mask(filters.genres, filters.explicit)
    if not filters.audio and not filters.exclude_artists:
        return base
    mask = np.ones(model.n_items, dtype=bool) if base is None else base.copy()
    for feature, bounds in filters.audio.items():
        values = model.features[feature]
        with np.errstate(invalid="ignore"):  # NaN (unknown feature) never satisfies a range
            if bounds.min is not None:
                mask &= values >= bounds.min
            if bounds.max is not None:
                mask &= values <= bounds.max
    for artist in filters.exclude_artists:
        rows = model.artist_rows.get(artist)
        if rows is not None:
            mask[rows] = False
    return mask


def excluded_rows(
    model: LoadedModel, filters: RecommendationFilters, played: set[str], extra: tuple[str, ...] = ()
) -> np.ndarray:
    """Rows never to return: excluded tracks, played tracks (unless disabled), and ``extra``."""
    ids = set(filters.exclude_tracks) | set(extra)
    if filters.exclude_played:
        ids |= played
    return model.rows(ids)


def diversify(
    rows: np.ndarray, scores: np.ndarray, first_artist: np.ndarray, max_per_artist: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best-first selection keeping at most ``max_per_artist`` tracks per (first) artist."""
    taken: dict[int, int] = {}
    keep = []
    for i, row in enumerate(rows):
        artist = int(first_artist[row])
        if artist >= 0:
            if taken.get(artist, 0) >= max_per_artist:
                continue
            taken[artist] = taken.get(artist, 0) + 1
        keep.append(i)
        if len(keep) == count:
            break
    keep_arr = np.array(keep, dtype=np.int64)
    return rows[keep_arr], scores[keep_arr]
