"""The track schema: Spotify's track object flattened, plus its audio features, every field nullable
except the id. A track without audio features is still a valid, recommendable track."""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, Field, field_validator

from core.contracts.ids import parse_track_id

# name -> (lowest, highest) allowed value, as Spotify documents them
AUDIO_FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "danceability": (0.0, 1.0),
    "energy": (0.0, 1.0),
    "key": (-1, 11),
    "loudness": (-60.0, 5.0),
    "mode": (0, 1),
    "speechiness": (0.0, 1.0),
    "acousticness": (0.0, 1.0),
    "instrumentalness": (0.0, 1.0),
    "liveness": (0.0, 1.0),
    "valence": (0.0, 1.0),
    "tempo": (0.0, 300.0),
    "time_signature": (0, 7),
}
AUDIO_FEATURES: tuple[str, ...] = tuple(AUDIO_FEATURE_RANGES)
_INTEGER_FEATURES = {"key", "mode", "time_signature"}

TRACK_SCHEMA = pa.schema(
    [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("artists", pa.list_(pa.string())),
        pa.field("artist_ids", pa.list_(pa.string())),
        pa.field("album", pa.string()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("duration_ms", pa.int64()),
        pa.field("explicit", pa.bool_()),
        pa.field("release_year", pa.int16()),
        *[pa.field(f, pa.int8() if f in _INTEGER_FEATURES else pa.float64()) for f in AUDIO_FEATURES],
    ]
)


class Track(BaseModel):
    """One catalog track. Used to validate rows from any source before they reach the parquet store."""

    track_id: str
    name: str | None = None
    artists: list[str] = Field(default_factory=list)
    artist_ids: list[str] = Field(default_factory=list)
    album: str | None = None
    genres: list[str] = Field(default_factory=list)
    duration_ms: int | None = Field(None, ge=0)
    explicit: bool | None = None
    release_year: int | None = Field(None, ge=1900, le=2100)
    danceability: float | None = None
    energy: float | None = None
    key: int | None = None
    loudness: float | None = None
    mode: int | None = None
    speechiness: float | None = None
    acousticness: float | None = None
    instrumentalness: float | None = None
    liveness: float | None = None
    valence: float | None = None
    tempo: float | None = None
    time_signature: int | None = None

    @field_validator("track_id", mode="before")
    @classmethod
    def _track_id(cls, value: str) -> str:
        return parse_track_id(str(value))

    @field_validator(*AUDIO_FEATURES)
    @classmethod
    def _in_range(cls, value: float | None, info) -> float | None:
        if value is None:
            return None
        low, high = AUDIO_FEATURE_RANGES[info.field_name]
        if not low <= value <= high:
            raise ValueError(f"{info.field_name} {value} is outside the range [{low}, {high}]")
        return value
