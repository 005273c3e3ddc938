from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from serving.deps import StateDep, UserId
from serving.recommender import recommend
from serving.schemas import ErrorResponse, RecommendationResponse

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.get(
    "/{user_id}",
    response_model=RecommendationResponse,
    responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def recommendations_for_user(
    user_id: UserId,
    state: StateDep,
    count: Annotated[int, Query(ge=1, le=100, description="How many tracks to return.")] = 20,
) -> RecommendationResponse:
    """Ranked tracks for a user, excluding tracks the user already played. Unknown users get popular tracks."""
    return await recommend(state, user_id, count)
