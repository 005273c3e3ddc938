"""The feedback use case: validate a whole batch first, then append it to the stream in one script
(or, while Redis is unavailable, to the durable local spool)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

import asyncio

from core.contracts.events import EventContext, FeedbackEvent
from core.feedback_stream import append_args, append_keys, encode
from serving.errors import ApiError, error_details, validation_error
from serving.observability import SPOOLED
from serving.schemas import FeedbackAccepted
from serving.spool import event_id_of
from serving.state import REDIS_ERRORS, AppState

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
            problems += error_details(exc.errors(), index=index, default_field="event")
    if problems:
        summary = "; ".join(f"events[{p.index}].{p.field}: {p.problem}" for p in problems[:5])
        raise validation_error(problems, f"{len(problems)} problem(s), nothing accepted: {summary}")
    return events


async def append_rows(state: AppState, rows: list[bytes]) -> list:
    """Append encoded rows to the stream (idempotent on event_id); raises Redis errors."""
    ids = [event_id_of(row) for row in rows]
    return await state.append_feedback(keys=append_keys(state.keys, ids), args=append_args(rows))


def _with_assignment(state: AppState, event: FeedbackEvent) -> FeedbackEvent:
    """Stamp the experiment and variant the user is assigned to on events that do not carry them:
    assignment is deterministic, so the server re-derives it and experiment metrics do not depend
    on clients echoing it back."""
    if event.context is not None and event.context.experiment_id:
        return event
    assignment = state.experiments.assign(event.user_id)
    if assignment is None:
        return event
    context = (event.context or EventContext()).model_copy(update={"experiment_id": assignment[0].id, "variant": assignment[1].name})
    return event.model_copy(update={"context": context})


async def accept(state: AppState, events: list[FeedbackEvent]) -> FeedbackAccepted:
    """Into the stream; while Redis is unavailable, into the local spool (fsync'd) instead."""
    await state.experiments.refresh()
    stamped = [_with_assignment(state, e.stamped()) for e in events]
    rows = [encode(e, "api") for e in stamped]
    ids = [e.event_id for e in stamped]
    if state.breaker.available:
        try:
            stream_ids = await append_rows(state, rows)
            new = sum(1 for s in stream_ids if s)
            return FeedbackAccepted(accepted=new, duplicates=len(rows) - new, event_ids=ids)
        except REDIS_ERRORS:
            state.breaker.failed()
    await asyncio.to_thread(state.spool.append, rows)
    SPOOLED.inc(len(rows))
    return FeedbackAccepted(accepted=len(rows), duplicates=0, event_ids=ids, spooled=True)
