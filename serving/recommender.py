"""The recommendation use case: user vector from Redis, scoring against the in-memory item vectors,
exclusions, and a cold-start fallback. Routes call this; it knows nothing of HTTP."""

from __future__ import annotations

import uuid

import numpy as np
import redis

from models.ranking import top_n
from serving.errors import ApiError
from serving.model_state import LoadedModel
from serving.schemas import RecommendationResponse, TrackOut
from serving.state import AppState

# confidence grows with the history the vector was learned from: 50 played tracks count as "fully"
_CONFIDENT_HISTORY = 50


def _tracks(model: LoadedModel, rows: np.ndarray, scores: np.ndarray) -> list[TrackOut]:
    items = model.items
    names, artists, genres = items["name"].to_numpy(), items["artists"].to_numpy(), items["genres"].to_numpy()
    return [
        TrackOut(
            track_id=model.items["track_id"].iat[r],
            name=names[r],
            artists=list(artists[r]) if artists[r] is not None else [],
            genres=list(genres[r]) if genres[r] is not None else [],
            score=float(s),
            position=i,
        )
        for i, (r, s) in enumerate(zip(rows, scores))
    ]


async def recommend(state: AppState, user_id: str, count: int) -> RecommendationResponse:
    model = await state.models.refresh()
    if model is None:
        raise ApiError(503, "no_model", "no model version is published yet: run the pipeline (echotune pipeline)")
    request_id = uuid.uuid4().hex
    degraded_reason = None
    try:
        vector, played = await state.user_state(model.version, user_id)
    except (redis.RedisError, OSError) as exc:
        vector, played, degraded_reason = None, set(), f"redis unavailable ({type(exc).__name__}): popularity fallback"
    excluded = model.rows(played)
    if vector is not None:
        rows, scores = top_n(model.vectors @ vector, count, excluded=excluded)
        algorithm, confidence = model.algorithm, min(1.0, np.log1p(len(played)) / np.log1p(_CONFIDENT_HISTORY))
    else:
        rows, scores = top_n(model.items["popularity"].to_numpy(dtype=np.float32), count, excluded=excluded)
        algorithm, confidence = "popularity", 0.0
    return RecommendationResponse(
        user_id=user_id,
        tracks=_tracks(model, rows, scores),
        algorithm=algorithm,
        model_version=model.version,
        confidence=float(confidence),
        request_id=request_id,
        degraded=degraded_reason is not None,
        degraded_reason=degraded_reason,
        metadata={"excluded_played": int(len(excluded)), "cold_start": vector is None and degraded_reason is None},
    )
