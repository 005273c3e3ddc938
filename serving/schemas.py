"""Request and response models of the public API (what the OpenAPI document shows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

API_VERSION = "1.0"


class TrackOut(BaseModel):
    track_id: str
    name: str | None = None
    artists: list[str] = Field(default_factory=list)
    genres: list[str] = Field(default_factory=list)
    score: float
    position: int


class RecommendationResponse(BaseModel):
    user_id: str
    tracks: list[TrackOut]
    algorithm: str
    model_version: str | None
    confidence: float = Field(..., ge=0.0, le=1.0, description="How much the list is personalised (0 = not at all).")
    experiment: str | None = None
    variant: str | None = None
    request_id: str = Field(
        ..., description="The served list's id: the request's X-Request-ID, made unique when the client chose it."
    )
    degraded: bool = False
    degraded_reason: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    token: str | None = Field(
        None,
        description="The request token: this list (surface, algorithm, model version, experiment, variant, tracks in order) signed "
        "by the API. Send it back as the `token` of feedback on these tracks; the event's context is then taken from it.",
    )


class FeedbackAccepted(BaseModel):
    accepted: int = Field(..., description="Events newly accepted (duplicates of earlier ids are not counted).")
    duplicates: int = 0
    event_ids: list[str]
    spooled: bool = Field(False, description="True when Redis was down and the events wait in the local spool.")
    ignored_tokens: list[ErrorDetail] = Field(
        default_factory=list,
        description="Events whose token did not hold (expired, not issued by this API, another user's list, a track "
        "not in it), by index and why: they are accepted and counted as if they had no token.",
    )


class Liveness(BaseModel):
    status: str = Field(..., description="alive: the process answers (nothing else is asked).")


class Health(BaseModel):
    status: str = Field(
        ...,
        description="ready; degraded (Redis down, but a model is loaded and the spool takes feedback: still in rotation); "
        "or not_ready (no model loaded, Redis down and the spool full or unwritable, or no append-only file while one is "
        "required).",
    )
    redis: str
    redis_aof: bool | None = Field(
        None,
        description="Whether Redis keeps an append-only file (None: Redis down). Without one a restart loses accepted "
        "feedback not yet drained and online learning; ECHOTUNE_REQUIRE_REDIS_AOF=true makes readiness fail then.",
    )
    model_version: str | None = Field(None, description="The champion version being served.")
    algorithm: str | None
    models: dict[str, str] = Field(default_factory=dict, description="Loaded model version by alias.")
    worker_alive: bool | None = Field(
        None,
        description="Whether a feedback worker's heartbeat is fresh (ECHOTUNE_WORKER_STALE_SECONDS); None when Redis is down. "
        "Readiness does not depend on it: feedback is still accepted and waits in the stream.",
    )
    worker_heartbeat_age_seconds: float | None = Field(
        None, description="Seconds since the newest worker heartbeat (None: none, or Redis down)."
    )
    api_version: str = API_VERSION


class ErrorDetail(BaseModel):
    index: int | None = None
    field: str | None = None
    problem: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None
