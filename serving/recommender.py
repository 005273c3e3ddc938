"""The recommendation use cases: for a user, for a batch of users, and tracks like a given one.
Routes call these; they know nothing of HTTP beyond raising ApiError.

Scoring, by what is known about the user:

* a user vector (a user the model knows, or one the feedback worker folded in): ``vectors @ user``;
* no vector but seed tracks, genres or listening history: content-based, cosine between the tracks'
  audio-feature and genre vectors and the mean vector of the seeds (or of the played tracks);
* nothing: popularity.

``confidence`` says how personal the list is: for a vector, ``min(1, log(1 + played) / log(51))``
(50 played tracks count as fully known); for content-based lists a third of that with the seeds
counted as history; 0 for popularity. When Redis is unavailable the list comes from the in-memory
popularity ranking, flagged ``degraded`` with the reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import orjson

from experiments.definition import Variant
from models.ranking import top_n
from serving.errors import ApiError
from serving.filters import RecommendationContext, RecommendationFilters, allowed_mask, diversify, excluded_rows
from serving.loaded_model import LoadedModel
from serving.observability import DEGRADED, RECOMMENDATIONS
from serving.deps import rate_limited
from serving.schemas import RecommendationResponse
from serving.security import ApiKey
from serving.state import AppState, RedisUnavailable

POPULARITY, CONTENT = "popularity", "content"
_FULL_HISTORY = np.log1p(50)
_PERSONAL_WEIGHT = 0.25  # similar-tracks: how much the user's taste moves the ranking


@dataclass
class RecommendationRequest:
    user_id: str
    count: int = 20
    algorithm: str | None = None
    filters: RecommendationFilters = field(default_factory=RecommendationFilters)
    context: RecommendationContext = field(default_factory=RecommendationContext)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    key: ApiKey | None = None  # counted against its rate limit with the user's reads


@dataclass
class Recommendations:
    """A use case's answer: the fields of RecommendationResponse, in its order, with the tracks as
    plain dicts. The single-user routes serialise it straight to JSON (orjson reads dataclasses);
    validating it into the pydantic model costs more than the rest of the request's Python, so only
    the batch route does."""

    user_id: str
    tracks: list[dict]
    algorithm: str
    model_version: str | None
    confidence: float
    experiment: str | None
    variant: str | None
    request_id: str
    degraded: bool = False
    degraded_reason: str | None = None
    metadata: dict = field(default_factory=dict)

    def json(self) -> bytes:
        return orjson.dumps(self)

    def response(self) -> RecommendationResponse:
        return RecommendationResponse.model_validate(self.__dict__)


@dataclass
class _Scored:
    scores: np.ndarray
    algorithm: str
    confidence: float
    cold_start: bool


async def _model(state: AppState, alias: str = "champion") -> LoadedModel:
    model = await state.models.refresh(alias)
    if model is None:
        raise ApiError(503, "no_model", "no model version is published yet: run the pipeline (echotune pipeline)")
    return model


async def _user(state: AppState, model: LoadedModel, user_id: str, key: ApiKey | None) -> tuple[np.ndarray | None, set[str], str | None]:
    """(vector, played, degraded reason); counts the request against ``key``'s rate limit."""
    try:
        vector, played, retry_after = await state.user_state(model.version, user_id, key)
    except RedisUnavailable as exc:
        retry_after = state.local_verdict(key) if key is not None else None
        if retry_after is not None:
            raise rate_limited(state, key, retry_after) from exc
        return None, set(), str(exc)
    if retry_after is not None:
        raise rate_limited(state, key, retry_after)
    return vector, played, None


def _check_algorithm(model: LoadedModel, algorithm: str | None) -> None:
    known = (model.algorithm, POPULARITY, CONTENT)
    if algorithm is not None and algorithm not in known:
        raise ApiError(422, "validation_error", f"algorithm: {algorithm!r} is not served; choose one of {', '.join(known)}")


def _content_scores(model: LoadedModel, seeds: np.ndarray) -> np.ndarray:
    profile = model.content[seeds].mean(axis=0)
    return model.content @ profile


def _score(model: LoadedModel, request: RecommendationRequest, vector: np.ndarray | None, played: set[str]) -> _Scored:
    history = len(played) + len(request.context.seed_tracks)
    wanted = request.algorithm or model.algorithm
    if wanted == model.algorithm and vector is not None:
        if vector.shape[0] != model.vectors.shape[1]:
            raise ApiError(500, "vector_mismatch", f"user vector has {vector.shape[0]} dimensions, model {model.version} {model.vectors.shape[1]}")
        return _Scored(model.vectors @ vector, model.algorithm, min(1.0, float(np.log1p(len(played)) / _FULL_HISTORY)), False)
    if wanted != POPULARITY:
        seeds = model.rows(request.context.seed_tracks or played)
        if len(seeds):
            confidence = min(1.0, float(np.log1p(history) / _FULL_HISTORY)) / 3
            return _Scored(_content_scores(model, seeds), CONTENT, confidence, vector is None)
    return _Scored(model.popularity, POPULARITY, 0.0, vector is None and wanted != POPULARITY)


def _tracks(model: LoadedModel, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    # every value comes from the loaded catalog, validated when it was imported
    ids, names, artists, genres = model.track_ids, model.names, model.artist_names, model.genre_names
    return [
        {"track_id": ids[r], "name": names[r], "artists": artists[r], "genres": genres[r], "score": s, "position": i}
        for i, (r, s) in enumerate(zip(rows.tolist(), scores.tolist()))
    ]


def _select(model: LoadedModel, scores: np.ndarray, request: RecommendationRequest, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = allowed_mask(model, request.filters)
    cap = request.filters.max_per_artist
    if cap is None:
        return top_n(scores, request.count, excluded=excluded, allowed=mask)
    # diversity: pick from a deeper pool; if one artist dominates even that, from the whole ranking
    for pool in (min(model.n_items, request.count * 8), model.n_items):
        rows, top = diversify(*top_n(scores, pool, excluded=excluded, allowed=mask), model.first_artist, cap, request.count)
        if len(rows) == request.count:
            break
    return rows, top


async def _variant_model(state: AppState, variant: Variant) -> tuple[LoadedModel | None, str | None]:
    """The model a variant serves and the algorithm it forces (None: the model's own)."""
    if variant.model_alias:
        return await state.models.refresh(variant.model_alias), None
    if variant.model_version:
        return await state.models.version(variant.model_version), None
    if variant.algorithm in (POPULARITY, CONTENT):
        return None, variant.algorithm
    return None, None  # a model algorithm: the champion (its algorithm is checked below)


async def recommend(state: AppState, request: RecommendationRequest) -> Recommendations:
    await state.experiments.refresh()
    assignment = state.experiments.assign(request.user_id) if request.algorithm is None else None
    model, notes = None, {}
    if assignment is not None:
        experiment, variant = assignment
        model, forced = await _variant_model(state, variant)
        request.algorithm = forced
        if model is None and (variant.model_alias or variant.model_version):
            notes["variant_fallback"] = f"variant {variant.name}'s model is not published: serving the champion"
    model = model or await _model(state)
    if assignment is not None and assignment[1].algorithm not in (None, POPULARITY, CONTENT, model.algorithm):
        notes["variant_fallback"] = f"variant {assignment[1].name} names {assignment[1].algorithm}; the champion is {model.algorithm}"
    _check_algorithm(model, request.algorithm)
    vector, played, degraded = await _user(state, model, request.user_id, request.key)
    scored = _score(model, request, vector, played)
    if request.context.genres and scored.algorithm == POPULARITY:
        # a cold user who named genres: popular tracks of those genres first
        boost = model.genre_mask(request.context.genres)
        scored.scores = scored.scores + boost * (float(scored.scores.max()) + 1.0)
    excluded = excluded_rows(model, request.filters, played, extra=tuple(request.context.seed_tracks))
    rows, scores = _select(model, scored.scores, request, excluded)
    experiment, variant = (assignment[0].id, assignment[1].name) if assignment else (None, None)
    RECOMMENDATIONS.labels(scored.algorithm, variant or "none").inc()
    if degraded:
        DEGRADED.labels("redis_unavailable").inc()
    return Recommendations(
        user_id=request.user_id,
        tracks=_tracks(model, rows, scores),
        algorithm=scored.algorithm,
        model_version=model.version,
        confidence=scored.confidence,
        experiment=experiment,
        variant=variant,
        request_id=request.request_id,
        degraded=degraded is not None,
        degraded_reason=degraded,
        metadata={"cold_start": scored.cold_start, "played_excluded": request.filters.exclude_played and bool(played), **notes},
    )


async def similar(
    state: AppState, user_id: str, track_id: str, count: int, filters: RecommendationFilters, request_id: str, key: ApiKey | None = None
) -> Recommendations:
    """Tracks like ``track_id`` (cosine of item vectors), nudged towards the user's taste when the
    user is known: score = z(similarity) + 0.25 z(user score)."""
    model = await _model(state)
    row = model.index.get(track_id)
    if row is None:
        raise ApiError(404, "unknown_track", f"track_id {track_id!r} is not in the catalog of model version {model.version}")
    vector, played, degraded = await _user(state, model, user_id, key)
    similarity = model.similarity @ model.similarity[row]
    scores = _standardise(similarity)
    personalised = vector is not None and vector.shape[0] == model.vectors.shape[1]
    if personalised:
        scores = scores + _PERSONAL_WEIGHT * _standardise(model.vectors @ vector)
    request = RecommendationRequest(user_id=user_id, count=count, filters=filters, request_id=request_id)
    rows, top = _select(model, scores, request, excluded_rows(model, filters, played, extra=(track_id,)))
    RECOMMENDATIONS.labels("similar", "none").inc()
    if degraded:
        DEGRADED.labels("redis_unavailable").inc()
    return Recommendations(
        user_id=user_id,
        tracks=_tracks(model, rows, top),
        algorithm="similar",
        model_version=model.version,
        confidence=min(1.0, float(np.log1p(len(played)) / _FULL_HISTORY)) if personalised else 0.0,
        experiment=None,
        variant=None,
        request_id=request_id,
        degraded=degraded is not None,
        degraded_reason=degraded,
        metadata={"seed_track": track_id, "personalised": personalised},
    )


def _standardise(values: np.ndarray) -> np.ndarray:
    std = float(values.std())
    return (values - float(values.mean())) / (std if std > 0 else 1.0)
