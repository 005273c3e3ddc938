"""The recommendation use cases: for a user, for a batch of users, and tracks like a given one.
Routes call these; they know nothing of HTTP beyond raising ApiError.

Scoring, by what is known about the user:

* a user vector (a user the model knows, or one the feedback worker folded in): ``vectors @ user``;
* no vector but seed tracks, genres or listening history: content-based, cosine between the tracks'
  audio-feature and genre vectors and the mean vector of the seeds (or of the played tracks);
* nothing: popularity.

A catalog served with an ANN index finds a known user's list, a list from seed tracks (its content index)
and similar tracks through it, and a popularity list by walking the popularity order
(:mod:`serving.retrieval`); ``exact`` (an admin's ``exact=true``) scores the whole catalog instead.

``confidence`` says how personal the list is: for a vector, ``min(1, log(1 + played) / log(51))``
(50 played tracks count as fully known); for content-based lists a third of that with the seeds
counted as history; 0 for popularity. When Redis is unavailable the list comes from the in-memory
popularity ranking, flagged ``degraded`` with the reason.

Every list served is recorded as an exposure and signed into the response's request token
(:mod:`serving.served_lists`). A user in a running experiment of the request's surface gets their
variant's list; in an interleaving experiment, both variants' lists merged by team draft (the coin
flips seeded by the experiment and the request, so a list can be rebuilt from its ids).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import orjson

from core.contracts.served_lists import ServedList
from core.settings import Settings
from experiments.definition import Experiment, Variant
from experiments.interleaving import request_seed, team_draft
from serving.errors import ApiError
from serving.filters import RecommendationContext, RecommendationFilters, excluded_rows
from serving.loaded_model import LoadedModel
from serving.observability import DEGRADED, RECOMMENDATIONS, STAGE_LATENCY
from serving.rate_limit import Charge
from serving.retrieval import popularity_scores, select, select_by_vector, select_popular, similar_rows
from serving.schemas import RecommendationResponse
from serving.state import AppState, RedisUnavailable
from serving.version_health import note_version

POPULARITY, CONTENT = "popularity", "content"
_FULL_HISTORY = np.log1p(50)


@dataclass
class RecommendationRequest:
    user_id: str
    count: int = 20
    algorithm: str | None = None
    filters: RecommendationFilters = field(default_factory=RecommendationFilters)
    context: RecommendationContext = field(default_factory=RecommendationContext)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    charge: Charge | None = None  # the request's rate-limit charge, counted with the user's reads
    surface: str = "recommendations"  # the endpoint asking: recommendations or batch (experiments run per surface)
    exact: bool = False  # score the whole catalog even when it has an ANN index (admin: checks, debugging)


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
    token: str | None = None  # the signed served list: feedback names it to say which list it answers

    def json(self) -> bytes:
        return orjson.dumps(self)

    def response(self) -> RecommendationResponse:
        return RecommendationResponse.model_validate(self.__dict__)


@dataclass
class _Scored:
    scores: np.ndarray | None  # None: the list comes from the ANN index with ``query``, or the popularity order
    algorithm: str
    confidence: float
    cold_start: bool
    query: np.ndarray | None = None
    first_genres: tuple[str, ...] = ()  # popularity: tracks of these genres first (a cold user who named them)
    space: str = "items"  # the vectors ``query`` is scored against: items (a user's vector) or content (seeds)


async def _model(state: AppState, alias: str = "champion") -> LoadedModel:
    model = await state.models.refresh(alias)
    if model is None:
        raise ApiError(503, "no_model", "no model version is published yet: run the pipeline (echotune pipeline)")
    return model


async def _user(
    state: AppState, models: list[LoadedModel], user_id: str, charge: Charge | None
) -> tuple[list[np.ndarray | None], set[str], str | None]:
    """(the user's vector of each model, played, degraded reason); settles the request's rate-limit
    ``charge`` (in this process when Redis is unavailable), raising the 429 past the limit."""
    started = time.perf_counter()
    try:
        vectors, played = await state.user_state([m.version for m in models], user_id, charge)
    except RedisUnavailable as exc:
        await state.rate_limits.settle(charge)
        return [None] * len(models), set(), str(exc)
    finally:
        STAGE_LATENCY.labels("feature_lookup").observe(time.perf_counter() - started)
    return vectors, played, None


def _check_algorithm(model: LoadedModel, algorithm: str | None) -> None:
    known = (model.algorithm, POPULARITY, CONTENT)
    if algorithm is not None and algorithm not in known:
        raise ApiError(
            422, "validation_error", f"algorithm: {algorithm!r} is not served; choose one of {', '.join(known)}"
        )


def _content_profile(model: LoadedModel, seeds: np.ndarray) -> np.ndarray:
    """The mean content vector of the seed rows: a track's content score is its (unit) vector's inner
    product with it, the cosine up to the profile's length."""
    return model.content[seeds].mean(axis=0)


def _score(
    model: LoadedModel,
    request: RecommendationRequest,
    algorithm: str | None,
    vector: np.ndarray | None,
    played: set[str],
) -> _Scored:
    history = len(played) + len(request.context.seed_tracks)
    wanted = algorithm or model.algorithm
    if wanted == model.algorithm and vector is not None:
        if vector.shape[0] != model.vectors.shape[1]:
            raise ApiError(
                500,
                "vector_mismatch",
                f"user vector has {vector.shape[0]} dimensions, model {model.version} {model.vectors.shape[1]}",
            )
        confidence = min(1.0, float(np.log1p(len(played)) / _FULL_HISTORY))
        if model.ann is not None and not request.exact:
            return _Scored(None, model.algorithm, confidence, False, query=vector)
        return _Scored(model.vectors @ vector, model.algorithm, confidence, False)
    if wanted != POPULARITY:
        seeds = model.rows(request.context.seed_tracks or played)
        if len(seeds):
            confidence = min(1.0, float(np.log1p(history) / _FULL_HISTORY)) / 3
            profile = _content_profile(model, seeds)
            if model.ann is not None and model.ann.content is not None and not request.exact:
                return _Scored(None, CONTENT, confidence, vector is None, query=profile, space="content")
            return _Scored(model.content @ profile, CONTENT, confidence, vector is None)
    # a cold user who named genres: popular tracks of those genres first
    first = tuple(request.context.genres)
    if request.exact:
        return _Scored(popularity_scores(model, first), POPULARITY, 0.0, vector is None and wanted != POPULARITY)
    return _Scored(None, POPULARITY, 0.0, vector is None and wanted != POPULARITY, first_genres=first)


def _tracks(model: LoadedModel, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    # every value comes from the loaded catalog, validated when it was imported
    ids, names, artists, genres = model.track_ids, model.names, model.artist_names, model.genre_names
    return [
        {"track_id": ids[r], "name": names[r], "artists": artists[r], "genres": genres[r], "score": s, "position": i}
        for i, (r, s) in enumerate(zip(rows.tolist(), scores.tolist()))
    ]


@dataclass
class _Ranker:
    """What answers for one variant (or for a request in no experiment): a model and the algorithm forced
    on it (None: the model's own)."""

    model: LoadedModel
    algorithm: str | None
    notes: dict = field(default_factory=dict)


async def _ranker(state: AppState, variant: Variant | None, requested: str | None) -> _Ranker:
    """The model and algorithm a variant serves (None: the request's own choice on the champion). A
    variant pinned to a model that is not published falls back to the champion, noted."""
    if variant is None:
        model = await _model(state)
        _check_algorithm(model, requested)
        return _Ranker(model, requested)
    model, forced, notes = None, None, {}
    if variant.model_alias:
        model = await state.models.refresh(variant.model_alias)
    elif variant.model_version:
        model = await state.models.version(variant.model_version)
    elif variant.algorithm in (POPULARITY, CONTENT):
        forced = variant.algorithm
    if model is None and (variant.model_alias or variant.model_version):
        notes["variant_fallback"] = f"variant {variant.name}'s model is not published: serving the champion"
    model = model or await _model(state)
    if variant.algorithm not in (None, POPULARITY, CONTENT, model.algorithm):
        notes["variant_fallback"] = (
            f"variant {variant.name} names {variant.algorithm}; the champion is {model.algorithm}"
        )
    return _Ranker(model, forced, notes)


@dataclass
class _Ranked:
    ranker: _Ranker
    scored: _Scored
    rows: np.ndarray
    scores: np.ndarray


def _rank(
    ranker: _Ranker, request: RecommendationRequest, vector: np.ndarray | None, played: set[str], settings: Settings
) -> _Ranked:
    model = ranker.model
    scored = _score(model, request, ranker.algorithm, vector, played)
    excluded = excluded_rows(model, request.filters, played, extra=tuple(request.context.seed_tracks))
    if scored.query is not None:
        return _Ranked(
            ranker,
            scored,
            *select_by_vector(model, scored.query, request.filters, request.count, excluded, settings, scored.space),
        )
    if scored.scores is None:
        popular = select_popular(model, request.filters, request.count, excluded, scored.first_genres)
        return _Ranked(ranker, scored, *popular)
    return _Ranked(ranker, scored, *select(model, scored.scores, request.filters, request.count, excluded))


async def recommend(state: AppState, request: RecommendationRequest) -> Recommendations:
    """The list for one user: their experiment variant's when they are in a running experiment of the
    request's surface (an algorithm override takes the request out of experiments), else the champion's."""
    await state.experiments.refresh()
    assignment = state.experiments.assign(request.user_id, request.surface) if request.algorithm is None else None
    if assignment is not None and assignment[0].design == "interleaving":
        return await _interleaved(state, request, assignment[0])
    ranker = await _ranker(state, assignment[1] if assignment else None, request.algorithm)
    note_version(ranker.model.version)
    vectors, played, degraded = await _user(state, [ranker.model], request.user_id, request.charge)
    ranked = _rank(ranker, request, vectors[0], played, state.settings)
    experiment, variant = (assignment[0].id, assignment[1].name) if assignment else (None, None)
    RECOMMENDATIONS.labels(ranked.scored.algorithm, variant or "none").inc()
    result = Recommendations(
        user_id=request.user_id,
        tracks=_tracks(ranker.model, ranked.rows, ranked.scores),
        algorithm=ranked.scored.algorithm,
        model_version=ranker.model.version,
        confidence=ranked.scored.confidence,
        experiment=experiment,
        variant=variant,
        request_id=request.request_id,
        degraded=degraded is not None,
        degraded_reason=degraded,
        metadata={
            "cold_start": ranked.scored.cold_start,
            "played_excluded": request.filters.exclude_played and bool(played),
            **ranker.notes,
        },
    )
    return _served(state, request.surface, result, degraded)


async def _interleaved(state: AppState, request: RecommendationRequest, experiment: Experiment) -> Recommendations:
    """One list merged by team draft from the experiment's two rankers (control "a", treatment "b"),
    the coin flips seeded by the experiment and the request id. Each track keeps its ranker's score; the
    list's algorithm is ``interleaved`` and the token records which ranker gave each position."""
    control, treatment = experiment.variants
    rankers = [await _ranker(state, control, None), await _ranker(state, treatment, None)]
    vectors, played, degraded = await _user(state, [r.model for r in rankers], request.user_id, request.charge)
    a, b = (_rank(r, request, v, played, state.settings) for r, v in zip(rankers, vectors))
    ids_a = [a.ranker.model.track_ids[r] for r in a.rows.tolist()]
    ids_b = [b.ranker.model.track_ids[r] for r in b.rows.tolist()]
    merged, teams = team_draft(ids_a, ids_b, request.count, request_seed(experiment.id, request.request_id))
    tracks = []
    for position, (track, team) in enumerate(zip(merged, teams)):
        ranked, ids = (a, ids_a) if team == "a" else (b, ids_b)
        at = ids.index(track)
        tracks += _tracks(ranked.ranker.model, ranked.rows[at : at + 1], ranked.scores[at : at + 1])
        tracks[-1]["position"] = position
    RECOMMENDATIONS.labels("interleaved", "interleaved").inc()
    notes = {**a.ranker.notes, **b.ranker.notes}
    result = Recommendations(
        user_id=request.user_id,
        tracks=tracks,
        algorithm="interleaved",
        model_version=None,
        confidence=max(a.scored.confidence, b.scored.confidence),
        experiment=experiment.id,
        variant=None,
        request_id=request.request_id,
        degraded=degraded is not None,
        degraded_reason=degraded,
        metadata={
            "cold_start": a.scored.cold_start and b.scored.cold_start,
            "played_excluded": request.filters.exclude_played and bool(played),
            "interleaved": [
                f"{control.name}: {a.scored.algorithm} {a.ranker.model.version}",
                f"{treatment.name}: {b.scored.algorithm} {b.ranker.model.version}",
            ],
            **notes,
        },
    )
    return _served(
        state, request.surface, result, degraded, teams="".join(teams), team_variants=(control.name, treatment.name)
    )


def _served(
    state: AppState,
    surface: str,
    result: Recommendations,
    degraded: str | None,
    teams: str | None = None,
    team_variants: tuple[str, str] | None = None,
) -> Recommendations:
    """Record the list as served (its exposure, see :mod:`serving.exposures`; not for an erased user,
    whose data is not taken in again) and sign it into the response's token."""
    if degraded:
        DEGRADED.labels("redis_unavailable").inc()
    served = ServedList(
        request_id=result.request_id,
        user_id=result.user_id,
        surface=surface,
        algorithm=result.algorithm,
        model_version=result.model_version,
        experiment_id=result.experiment,
        variant=result.variant,
        tracks=tuple(t["track_id"] for t in result.tracks),
        served_ms=int(state.clock.now() * 1000),
        teams=teams,
        team_variants=team_variants,
    )
    if served.tracks and state.erased.erased_at(served.user_id) is None:
        state.exposures.record(served)
    result.token = state.tokens.sign(served)
    return result


async def similar(
    state: AppState,
    user_id: str,
    track_id: str,
    count: int,
    filters: RecommendationFilters,
    request_id: str,
    charge: Charge | None = None,
    exact: bool = False,
) -> Recommendations:
    """Tracks like ``track_id`` (cosine of item vectors), nudged towards the user's taste when the
    user is known: score = z(similarity) + 0.25 z(user score), z over the whole catalog. A user in a
    running experiment of the ``similar`` surface gets their variant's model (its similarity vectors
    and their vector of it). Through the ANN index (unless ``exact``): the most similar tracks,
    over-fetched 4x when personalised, ranked by the same score."""
    await state.experiments.refresh()
    assignment = state.experiments.assign(user_id, "similar")
    ranker = await _ranker(state, assignment[1] if assignment else None, None)
    model = ranker.model
    row = model.index.get(track_id)
    if row is None:
        raise ApiError(
            404, "unknown_track", f"track_id {track_id!r} is not in the catalog of model version {model.version}"
        )
    vectors, played, degraded = await _user(state, [model], user_id, charge)
    vector = vectors[0]
    personalised = vector is not None and vector.shape[0] == model.vectors.shape[1]
    excluded = excluded_rows(model, filters, played, extra=(track_id,))
    rows, top = similar_rows(
        model, row, vector if personalised else None, filters, count, excluded, state.settings, exact
    )
    experiment, variant = (assignment[0].id, assignment[1].name) if assignment else (None, None)
    RECOMMENDATIONS.labels("similar", variant or "none").inc()
    result = Recommendations(
        user_id=user_id,
        tracks=_tracks(model, rows, top),
        algorithm="similar",
        model_version=model.version,
        confidence=min(1.0, float(np.log1p(len(played)) / _FULL_HISTORY)) if personalised else 0.0,
        experiment=experiment,
        variant=variant,
        request_id=request_id,
        degraded=degraded is not None,
        degraded_reason=degraded,
        metadata={"seed_track": track_id, "personalised": personalised, **ranker.notes},
    )
    return _served(state, "similar", result, degraded)
