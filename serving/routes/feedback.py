from __future__ import annotations

import orjson
from fastapi import APIRouter, Request

from serving.deps import FeedbackCharge, StateDep
from serving.errors import ApiError
from serving.feedback import MAX_BATCH, accept, parse_batch, raw_events
from serving.schemas import ErrorResponse, FeedbackAccepted

router = APIRouter(tags=["feedback"])

_BODY_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/FeedbackEvent"},
        {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackEvent"}, "maxItems": MAX_BATCH},
        {
            "type": "object",
            "properties": {
                "events": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/FeedbackEvent"},
                    "maxItems": MAX_BATCH,
                }
            },
            "required": ["events"],
        },
    ]
}


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    responses={
        401: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        429: {"model": ErrorResponse},
        503: {
            "model": ErrorResponse,
            "description": "Redis is unavailable and the local spool is full: nothing was stored, "
            "retry after the Retry-After seconds.",
        },
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def post_feedback(request: Request, state: StateDep, charge: FeedbackCharge) -> FeedbackAccepted:
    """Accept one event or a batch (validated as a whole: one bad event rejects the batch with every
    problem listed). Client-supplied event_ids are idempotency keys: a retried event is not counted twice.
    Each event counts against the key's feedback rate limit, before validation (a 1,000-event batch
    costs 1,000). A 202 means stored: in the stream, or (Redis down) in the fsync'd local spool; when the
    spool is full the answer is 503 with Retry-After and nothing is stored."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_json", f"body is not valid JSON: {exc}") from exc
    charge.units = max(1, len(raw_events(body)))
    await state.rate_limits.settle(charge)
    return await accept(state, parse_batch(body))
