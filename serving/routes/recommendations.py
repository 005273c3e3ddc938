from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from core.contracts.events import safe_id
from core.contracts.ids import parse_track_id
from models.features import CONTINUOUS_FEATURES
from serving.deps import RecommendationCharge, StateDep, UserId, app_state
from serving.errors import ApiError, error_details, validation_error
from serving.filters import (
    MAX_LIST,
    AlgorithmName,
    ArtistId,
    Genre,
    RecommendationContext,
    RecommendationFilters,
    TrackRef,
)
from serving.recommender import RecommendationRequest, Recommendations, recommend, similar
from serving.schemas import ErrorDetail, ErrorResponse, RecommendationResponse
from serving.security import ApiKey

router = APIRouter(prefix="/recommendations", tags=["recommendations"])
ERRORS = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
MAX_BATCH = 100


def _split(values: list[str]) -> list[str]:
    """Repeated parameters or comma-separated values: both mean a list."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class _ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    genres: list[Genre] = Field(
        [], max_length=50, description="Only tracks with one of these genres (repeat or comma-separate)."
    )
    explicit: bool | None = Field(None, description="false: leave out explicit tracks.")
    exclude_tracks: list[TrackRef] = Field([], max_length=MAX_LIST, description="Track ids never to return.")
    exclude_artists: list[ArtistId] = Field([], max_length=MAX_LIST, description="Artist ids never to return.")
    exclude_played: bool = Field(True, description="Leave out tracks the user already played.")
    max_per_artist: int | None = Field(None, ge=1, le=100, description="At most this many tracks per artist.")
    exact: bool = Field(
        False, description="Admin keys only: score the whole catalog, not through the ANN index (checks, debugging)."
    )

    @field_validator("genres", "exclude_tracks", "exclude_artists", mode="before")
    @classmethod
    def _lists(cls, value):
        return _split(value if isinstance(value, list) else [value])

    def filters(self) -> RecommendationFilters:
        audio = {}
        for feature in CONTINUOUS_FEATURES:
            low, high = getattr(self, f"{feature}_min"), getattr(self, f"{feature}_max")
            if low is not None or high is not None:
                audio[feature] = {"min": low, "max": high}
        try:
            return RecommendationFilters(
                genres=self.genres,
                explicit=self.explicit,
                audio=audio,
                exclude_tracks=self.exclude_tracks,
                exclude_artists=self.exclude_artists,
                exclude_played=self.exclude_played,
                max_per_artist=self.max_per_artist,
            )
        except ValidationError as exc:
            raise validation_error(error_details(exc.errors())) from exc


# audio feature ranges as query parameters: energy_min, energy_max, tempo_min, ...
ListQuery = create_model(
    "ListQuery",
    __base__=_ListQuery,
    **{
        f"{f}_{end}": (float | None, Field(None, description=f"{end}imum {f}"))
        for f in CONTINUOUS_FEATURES
        for end in ("min", "max")
    },
)


class UserQuery(ListQuery):  # type: ignore[misc, valid-type]
    count: int = Field(20, ge=1, le=100, description="How many tracks to return.")
    algorithm: AlgorithmName | None = Field(
        None, description="Override the algorithm: the model's own, content or popularity."
    )
    seed_tracks: list[TrackRef] = Field([], max_length=50, description="Cold start: tracks to start from.")
    context_genres: list[Genre] = Field([], max_length=20, description="Cold start: genres to start from.")

    @field_validator("seed_tracks", "context_genres", mode="before")
    @classmethod
    def _context_lists(cls, value):
        return _split(value if isinstance(value, list) else [value])

    def context(self) -> RecommendationContext:
        try:
            return RecommendationContext(seed_tracks=self.seed_tracks, genres=self.context_genres)
        except ValidationError as exc:
            raise validation_error(error_details(exc.errors())) from exc


class SimilarQuery(ListQuery):  # type: ignore[misc, valid-type]
    count: int = Field(20, ge=1, le=100, description="How many tracks to return.")


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    """OpenAPI parameters of a query model, for routes that parse their query string themselves."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": field.pop("description", ""),
            "schema": field,
            **({"style": "form", "explode": True} if field.get("type") == "array" else {}),
        }
        for name, field in schema["properties"].items()
    ]


def _parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    """The query string validated in one step (FastAPI's per-parameter handling of a 30-field query
    model costs milliseconds per request). Repeated and comma-separated values both make lists."""
    raw: dict[str, object] = {}
    for name, value in request.query_params.multi_items():
        field = model.model_fields.get(name)
        if field is not None and getattr(field.annotation, "__origin__", None) is list:
            raw.setdefault(name, []).append(value)  # type: ignore[union-attr]
        else:
            raw[name] = value
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(error_details(exc.errors())) from exc


@router.get(
    "/{user_id}",
    response_model=RecommendationResponse,
    responses=ERRORS,
    openapi_extra={"parameters": _query_parameters(UserQuery)},
)
async def recommendations_for_user(request: Request, user_id: UserId, charge: RecommendationCharge) -> Response:
    """Ranked tracks for a user. Known users get the model's ranking; unknown users get content-based
    tracks from seed tracks or genres when given, else popular tracks."""
    state = app_state(request)
    query = _parse_query(request, UserQuery)
    wanted = RecommendationRequest(
        user_id=user_id,
        count=query.count,
        algorithm=query.algorithm,
        filters=query.filters(),
        context=query.context(),
        request_id=list_id(request),
        charge=charge,
        exact=_exact(query, charge.key),
    )
    return _json(await recommend(state, wanted))


@router.get(
    "/{user_id}/similar/{track_id}",
    response_model=RecommendationResponse,
    responses={**ERRORS, 404: {"model": ErrorResponse}},
    openapi_extra={"parameters": _query_parameters(SimilarQuery)},
)
async def similar_tracks(
    request: Request,
    user_id: UserId,
    track_id: Annotated[
        str, Path(max_length=100, description="A Spotify track id or spotify:track: URI (at most 100 characters).")
    ],
    charge: RecommendationCharge,
) -> Response:
    """Tracks like this one, nudged towards the user's taste when the user is known."""
    state = app_state(request)
    query = _parse_query(request, SimilarQuery)
    try:
        track = parse_track_id(track_id)
    except ValueError as exc:
        raise ApiError(
            422, "validation_error", f"track_id: {exc}", [ErrorDetail(field="track_id", problem=str(exc))]
        ) from exc
    return _json(
        await similar(
            state,
            user_id,
            track,
            query.count,
            query.filters(),
            list_id(request),
            charge,
            exact=_exact(query, charge.key),
        )
    )


def _exact(query: BaseModel, key: ApiKey) -> bool:
    """The ``exact`` parameter, for admin keys only (a full scan of a large catalog is a cost a client
    key must not be able to impose)."""
    if query.exact and not key.allows("admin"):
        raise ApiError(
            403,
            "forbidden",
            f"exact: the query parameter exact=true needs an API key with scope admin; yours has scope {key.scope}",
            [ErrorDetail(field="exact", problem="needs scope admin")],
        )
    return query.exact


def list_id(request: Request) -> str:
    """The id of the list a response serves: the request id, with a random suffix when the client chose
    the request id (a client reusing one must not make two lists one: exposures are keyed by it)."""
    if request.state.request_id_from_client:
        return f"{request.state.request_id}.{uuid.uuid4().hex[:12]}"
    return request.state.request_id


def _json(body: Recommendations) -> Response:
    # built from validated catalog values: serialise once, skip FastAPI's response-model validation
    return Response(body.json(), media_type="application/json")


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(..., max_length=128)
    count: int = Field(20, ge=1, le=100)
    algorithm: AlgorithmName | None = None
    filters: RecommendationFilters = Field(default_factory=RecommendationFilters)
    context: RecommendationContext = Field(default_factory=RecommendationContext)

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        return safe_id("user_id", value)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[BatchItem] = Field(..., min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel):
    user_id: str
    result: RecommendationResponse | None = None
    error: ErrorResponse | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


@router.post("/batch", response_model=BatchResponse, responses=ERRORS)
async def recommendations_batch(
    request: Request, body: BatchRequest, state: StateDep, charge: RecommendationCharge
) -> BatchResponse:
    """Recommendations for up to 100 users in one call; each user's result or error in request order.
    Each user counts as one request against the key's rate limit."""
    charge.units = len(body.requests)
    await state.rate_limits.settle(charge)
    results, batch_id = [], list_id(request)
    for i, item in enumerate(body.requests):
        wanted = RecommendationRequest(
            user_id=item.user_id,
            count=item.count,
            algorithm=item.algorithm,
            filters=item.filters,
            context=item.context,
            request_id=f"{batch_id}-{i}",
            surface="batch",
        )
        try:
            results.append(BatchResult(user_id=item.user_id, result=(await recommend(state, wanted)).response()))
        except ApiError as exc:
            error = {
                "error": {"code": exc.code, "message": exc.message, "details": exc.details},
                "request_id": wanted.request_id,
            }
            results.append(BatchResult(user_id=item.user_id, error=error))
    return BatchResponse(results=results)
