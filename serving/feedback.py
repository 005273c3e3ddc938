"""The feedback use case: validate a whole batch first, then append it to the stream in one script."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from echotune.contracts.events import FeedbackEvent
from echotune.feedback_stream import append_args, append_keys
from serving.errors import ApiError
from serving.schemas import ErrorDetail, FeedbackAccepted
from serving.state import AppState

MAX_BATCH = 1000


def parse_batch(body: Any) -> list[FeedbackEvent]:
    """Events from a body that is one event, a list of events, or ``{"events": [...]}``.

    Raises a 422 ApiError listing every bad event's index, field and problem; nothing is accepted
    from a batch with any bad event.
    """
    if isinstance(body, dict) and "events" in body:
        raw = body["events"]
    elif isinstance(body, dict):
        raw = [body]
    else:
        raw = body
    if not isinstance(raw, list):
        raise ApiError(422, "validation_error", "body must be an event object, a list of events, or {\"events\": [...]}")
    if not raw:
        raise ApiError(422, "validation_error", "events: the batch is empty")
    if len(raw) > MAX_BATCH:
        raise ApiError(413, "batch_too_large", f"events: at most {MAX_BATCH} events per request (got {len(raw)})")
    events, problems = [], []
    for index, item in enumerate(raw):
        try:
            events.append(FeedbackEvent.model_validate(item))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "event"
                problems.append(ErrorDetail(index=index, field=field, problem=err["msg"].removeprefix("Value error, ")))
    if problems:
        summary = "; ".join(f"events[{p.index}].{p.field}: {p.problem}" for p in problems[:5])
        raise ApiError(422, "validation_error", f"{len(problems)} problem(s), nothing accepted: {summary}", problems)
    return events


async def accept(state: AppState, events: list[FeedbackEvent]) -> FeedbackAccepted:
    stamped = [e.stamped() for e in events]
    try:
        stream_ids = await state.append_feedback(keys=append_keys(state.keys, stamped), args=append_args(stamped, "api"))
    except OSError as exc:  # the spool for this case arrives with the feedback processor
        raise ApiError(503, "feedback_unavailable", f"feedback store unavailable, retry later ({exc})") from exc
    new = sum(1 for s in stream_ids if s)
    return FeedbackAccepted(accepted=new, duplicates=len(stamped) - new, event_ids=[e.event_id for e in stamped])
