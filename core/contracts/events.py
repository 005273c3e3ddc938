"""The feedback event schema: what API clients post, what the Redis stream carries, what the offline
event table stores (with the context flattened into columns), and what experiments analyse."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.contracts.ids import SAFE_ID, parse_track_id

EventType = Literal[
    "recommendation_shown",
    "recommendation_clicked",
    "track_completed",
    "track_skipped",
    "explicit_rating",
    "play",
    "like",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# An event may be stamped a little ahead of the server clock (client clock skew), never days ahead.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_MS_PLAYED = 24 * 3600 * 1000


def safe_id(field: str, value: str) -> str:
    """``value`` if it is a safe id (it travels in Redis keys and URLs), else ValueError naming ``field``."""
    if not SAFE_ID.match(value):
        raise ValueError(f"{field} must be 1-128 characters of letters, digits and _.:@- (got {value[:40]!r})")
    return value


# Context values become metric labels and aggregate keys ("algorithm|variant|type"): a safe alphabet
# with no separator, quote or newline, so no stored value can break an exporter or a key.
LABEL = re.compile(r"^[0-9A-Za-z_.:-]{1,64}$")


def safe_label(field: str, value: str | None) -> str | None:
    """``value`` if it may become a metric label (1-64 of letters, digits and _.:-), else ValueError naming ``field``."""
    if value is not None and not LABEL.match(value):
        raise ValueError(f"{field} must be 1-64 characters of letters, digits and _.:- (got {value[:40]!r})")
    return value


class EventContext(BaseModel):
    """Where the event came from: the recommendation response it answers and the experiment arm."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, max_length=64)
    algorithm: str | None = Field(None, max_length=64)
    model_version: str | None = Field(None, max_length=64)
    experiment_id: str | None = Field(None, max_length=64)
    variant: str | None = Field(None, max_length=64)
    position: int | None = Field(None, ge=0, le=10_000)

    @field_validator("request_id", "algorithm", "model_version", "experiment_id", "variant")
    @classmethod
    def _labels(cls, value: str | None, info) -> str | None:
        return safe_label(info.field_name, value)


class FeedbackEvent(BaseModel):
    """One listening or recommendation event.

    ``event_id`` is optional on input: a client-supplied id is an idempotency key, otherwise the server
    assigns one. ``track_id`` accepts a bare Spotify id or a ``spotify:track:`` URI and stores the id.
    ``rating`` (1-5) is required for ``explicit_rating`` and rejected for every other type.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, max_length=128)
    user_id: str = Field(..., max_length=128)
    track_id: str
    type: EventType
    timestamp: datetime | None = None
    ms_played: int | None = Field(None, ge=0, le=MAX_MS_PLAYED)
    rating: float | None = Field(None, ge=1.0, le=5.0)
    context: EventContext | None = Field(
        None, description="What the client says about where the event came from: kept for audit, never counted."
    )
    token: str | None = Field(
        None,
        max_length=4096,
        description="The request token of the recommendation response the event answers: its context (list, position, variant) comes from the token.",
    )

    @field_validator("event_id")
    @classmethod
    def _event_id(cls, value: str | None) -> str | None:
        return None if value is None else safe_id("event_id", value)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return safe_id("user_id", value)

    @field_validator("track_id", mode="before")
    @classmethod
    def _track_id(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("track_id must be a string")
        return parse_track_id(value)

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # naive timestamps are UTC by contract
            value = value.replace(tzinfo=UTC)
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before the first representable UTC instant
            raise ValueError(f"timestamp {value.isoformat()} is out of range in UTC") from None
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"timestamp {value.isoformat()} is in the future")
        return value

    @model_validator(mode="after")
    def _rating_matches_type(self) -> FeedbackEvent:
        if self.type == "explicit_rating" and self.rating is None:
            raise ValueError("rating is required when type is explicit_rating")
        if self.type != "explicit_rating" and self.rating is not None:
            raise ValueError(f"rating is only allowed when type is explicit_rating (type is {self.type})")
        return self

    def stamped(self, now: datetime | None = None) -> FeedbackEvent:
        """Return a copy with ``event_id`` and ``timestamp`` filled in where the client left them out."""
        return self.model_copy(
            update={
                "event_id": self.event_id or uuid.uuid4().hex,
                "timestamp": self.timestamp or (now or datetime.now(UTC)),
            }
        )

    def to_row(
        self, source: str = "api", trusted: Mapping[str, Any] | None = None, context_source: str | None = None
    ) -> dict[str, Any]:
        """Flatten to one row of :data:`EVENT_SCHEMA`. The context columns (request_id, surface,
        algorithm, model_version, experiment_id, variant, position) come from ``trusted``: what the
        server knows (a verified request token, or the user's experiment assignment), named by
        ``context_source``. The client's own ``context`` is kept as JSON in ``client_context``, for
        audit only; without ``trusted`` (imports, tests) it fills the context columns as it always did."""
        ctx = self.context.model_dump(exclude_none=True) if self.context else {}
        columns = dict(trusted) if trusted is not None else ctx
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "track_id": self.track_id,
            "type": self.type,
            "timestamp": self.timestamp,
            "ms_played": self.ms_played,
            "rating": self.rating,
            **{name: columns.get(name) for name in CONTEXT_COLUMNS},
            "source": source,
            "context_source": context_source if trusted is not None else ("client" if ctx else None),
            "client_context": orjson.dumps(ctx).decode() if ctx and trusted is not None else None,
        }


EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("ms_played", pa.int64()),
        pa.field("rating", pa.float32()),
        pa.field("request_id", pa.string()),
        pa.field("algorithm", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("experiment_id", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("position", pa.int32()),
        # where the row came from: api, synthetic, spotify_history, ...
        pa.field("source", pa.string()),
        pa.field("surface", pa.string()),  # the endpoint that served the list: recommendations, similar, batch
        # where the context columns come from: "server" (the API's own exposure record), "token" (a verified
        # request token), "assignment" (the user's experiment arm, no list named), "repeat" (a listening event
        # repeated on a list's track its token already counted: kept for learning, counted for no arm),
        # "client" (imports, older rows), null (none)
        pa.field("context_source", pa.string()),
        pa.field("client_context", pa.string()),  # the context a client sent, JSON, for audit only
    ]
)
# the ``source`` of the events an experiment simulation writes (the demo's synthetic listeners answering
# served lists, part ``simulation-<experiment id>``): experiment reports read them and say so; training
# leaves them out (the next model would learn the simulator's answers to the current model's own lists)
SIMULATED_SOURCE = "simulation"
CONTEXT_COLUMNS = ("request_id", "surface", "algorithm", "model_version", "experiment_id", "variant", "position")
