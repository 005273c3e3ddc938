"""The feedback use case: validate a whole batch first (fields, erased users), then
append it to the stream in one script (or, while Redis is unavailable, to the durable local spool, which
a background task replays). What an event is counted under comes from the server (:func:`attribute`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from core.contracts.events import FeedbackEvent
from core.contracts.served_lists import ServedList
from core.feedback_stream import append_call, encode, is_stream_full
from serving.errors import ApiError, error_details, validation_error
from serving.observability import SPOOL_DROPPED_ERASED, SPOOL_REFUSED, SPOOLED, TOKENS_IGNORED
from serving.schemas import ErrorDetail, FeedbackAccepted
from serving.served_lists import InvalidToken
from serving.spool import SpoolFull
from serving.state import REDIS_ERRORS, AppState

MAX_BATCH = 1000
SPOOL_RETRY_AFTER_SECONDS = 5  # what a 503 of a full spool asks clients to wait: a few replay rounds

log = logging.getLogger(__name__)


def raw_events(body: Any) -> list:
    """The items of a body that is one event, a list of events, or ``{"events": [...]}`` (not yet
    validated: what the rate limit counts); a 422 for a body of any other shape."""
    if isinstance(body, dict) and "events" in body:
        raw = body["events"]
    elif isinstance(body, dict):
        raw = [body]
    else:
        raw = body
    if not isinstance(raw, list):
        raise ApiError(422, "validation_error", 'body must be an event object, a list of events, or {"events": [...]}')
    return raw


def parse_batch(body: Any) -> list[FeedbackEvent]:
    """Events from a body that is one event, a list of events, or ``{"events": [...]}``.

    Raises a 422 ApiError listing every bad event's index, field and problem; nothing is accepted
    from a batch with any bad event.
    """
    raw = raw_events(body)
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
    """Append encoded rows to the stream (idempotent on each row's event id; a token's list counts a
    track and type once, see :mod:`core.feedback_stream`); raises Redis errors."""
    keys, args = append_call(state.keys, rows, state.settings.feedback_stream_cap)
    return await state.append_feedback(keys=keys, args=args)


@dataclass(frozen=True)
class Attributed:
    """An event with the context the server vouches for (see :meth:`FeedbackEvent.to_row`)."""

    event: FeedbackEvent
    trusted: dict
    source: str | None  # token, assignment, or None (no experiment, no list named)
    duplicate_of_exposure: bool = False  # a client's recommendation_shown of a list the server recorded itself


def attribute(state: AppState, events: list[FeedbackEvent]) -> tuple[list[Attributed], list[ErrorDetail]]:
    """The context each event is counted under, from what the server knows, never from the client:

    * an event naming a request token: the token's list (surface, algorithm, model version, experiment,
      its position and the variant that gave it); a ``recommendation_shown`` with a token repeats the
      exposure the server recorded when it served the list, and is not stored again;
    * without a token, or with one that does not hold (expired, not signed by this API, another user's
      list, a track not in it): the experiment and variant the user is assigned to on the recommendations
      surface (assignment is deterministic), so user-level metrics (completion, listening time) count
      for their arm; the event names no list, so it is not a click or an impression of one (untargeted).

    Returns the attributed events and, for each event whose token was ignored, its index and why: one
    stale token never costs its batch (the events are kept, stamped from the assignment)."""
    out, ignored, verified = [], [], {}
    for index, event in enumerate(events):
        served = None
        if event.token is not None:
            if event.token not in verified:
                try:
                    verified[event.token] = state.tokens.verify(event.token)
                except InvalidToken as exc:
                    verified[event.token] = exc
            served = verified[event.token]
            problem = _token_problem(served, event)
            if problem is not None:
                TOKENS_IGNORED.labels(problem.reason).inc()
                ignored.append(
                    ErrorDetail(index=index, field="token", problem=f"{problem}; counted as without a token")
                )
                served = None
        if served is None:
            assignment = state.experiments.assign(event.user_id, "recommendations")
            trusted = {"experiment_id": assignment[0].id, "variant": assignment[1].name} if assignment else {}
            out.append(Attributed(event, trusted, "assignment" if assignment else None))
            continue
        position = served.position_of(event.track_id)
        trusted = {
            "request_id": served.request_id,
            "surface": served.surface,
            "algorithm": served.algorithm,
            "model_version": served.model_version,
            "experiment_id": served.experiment_id,
            "variant": served.variant_at(position),
            "position": position,
        }
        out.append(Attributed(event, trusted, "token", event.type == "recommendation_shown"))
    return out, ignored


def _token_problem(served: ServedList | InvalidToken, event: FeedbackEvent) -> InvalidToken | None:
    if isinstance(served, InvalidToken):
        return served
    if served.user_id != event.user_id:
        return InvalidToken("other_user", "the token was issued for another user's list")
    if served.position_of(event.track_id) is None:
        return InvalidToken(
            "track_not_in_list",
            f"track {event.track_id} is not in the list the token names ({len(served.tracks)} tracks)",
        )
    return None


def refuse_erased(state: AppState, events: list[FeedbackEvent]) -> None:
    """422 naming every event of an erased user: their data is not taken in again (GDPR)."""
    problems = []
    for index, event in enumerate(events):
        at = state.erased.erased_at(event.user_id)
        if at is not None:
            when = time.strftime("%Y-%m-%d", time.gmtime(at))
            problems.append(
                ErrorDetail(
                    index=index,
                    field="user_id",
                    problem=f"user {event.user_id!r} was erased on {when} (GDPR): their events are not accepted",
                )
            )
    if problems:
        raise ApiError(
            422,
            "erased_user",
            f"{len(problems)} event(s) of erased users, nothing accepted: {problems[0].problem}",
            problems,
        )


async def accept(state: AppState, events: list[FeedbackEvent]) -> FeedbackAccepted:
    """Into the stream; while Redis is unavailable, into the local spool (fsync'd) instead. Events of
    erased users are refused."""
    await state.erased.refresh()
    refuse_erased(state, events)
    await state.experiments.refresh()
    attributed, ignored = attribute(state, [e.stamped() for e in events])
    ids = [a.event.event_id for a in attributed]
    rows = [encode(a.event, "api", a.trusted, a.source) for a in attributed if not a.duplicate_of_exposure]
    shown_twice = len(attributed) - len(rows)
    if not rows:
        return FeedbackAccepted(accepted=0, duplicates=shown_twice, event_ids=ids, ignored_tokens=ignored)
    if state.breaker.available:
        try:
            stream_ids = await append_rows(state, rows)
            new = sum(1 for s in stream_ids if s)
            return FeedbackAccepted(
                accepted=new, duplicates=len(rows) - new + shown_twice, event_ids=ids, ignored_tokens=ignored
            )
        except REDIS_ERRORS as exc:
            if is_stream_full(exc):  # Redis answers; the drain is behind: back-pressure, not the spool
                message = f"{str(exc).removeprefix('STREAMFULL ')}; nothing was stored: retry after {SPOOL_RETRY_AFTER_SECONDS}s"
                raise ApiError(
                    503, "stream_full", message, headers={"Retry-After": str(SPOOL_RETRY_AFTER_SECONDS)}
                ) from exc
            state.breaker.failed()
    await _spool(state, rows)
    return FeedbackAccepted(
        accepted=len(rows), duplicates=shown_twice, event_ids=ids, spooled=True, ignored_tokens=ignored
    )


async def _spool(state: AppState, rows: list[bytes]) -> None:
    """Into the local spool, or a 503 with Retry-After when it cannot take them: a 202 always means
    stored."""
    retry, wait = {"Retry-After": str(SPOOL_RETRY_AFTER_SECONDS)}, f"retry after {SPOOL_RETRY_AFTER_SECONDS}s"
    try:
        await asyncio.to_thread(state.spool.append, rows, state.settings.spool_max_bytes)
    except SpoolFull as exc:
        SPOOL_REFUSED.inc(len(rows))
        message = f"Redis is unavailable and this server's feedback spool is full ({exc}); nothing was stored: {wait}"
        raise ApiError(503, "spool_full", message, headers=retry) from exc
    except OSError as exc:
        SPOOL_REFUSED.inc(len(rows))
        log.error("could not write the feedback spool in %s (%s)", state.spool.folder, exc)
        message = f"Redis is unavailable and this server's feedback spool cannot be written ({exc.strerror}); nothing was stored: {wait}"
        raise ApiError(503, "spool_unavailable", message, headers=retry) from exc
    SPOOLED.inc(len(rows))


async def append_unerased(state: AppState, rows: list[bytes]) -> None:
    """Append spooled ``rows`` except those of users erased since they were spooled (the erasure may have
    answered 503 while Redis was down, this host's spool untouched): those are dropped, counted and
    logged without the id, and any online keys of the user are deleted (an erasure whose online half
    never ran)."""
    kept, erased_users = [], set()
    for row in rows:
        user = orjson.loads(row).get("user_id")
        if isinstance(user, str) and state.erased.erased_at(user) is not None:
            erased_users.add(user)
        else:
            kept.append(row)
    if erased_users:
        dropped = len(rows) - len(kept)
        SPOOL_DROPPED_ERASED.inc(dropped)
        versions = [v.decode() for v in await state.redis.zrange(state.keys.models_index(), 0, -1)]
        for user in erased_users:  # one slot per user ({u:<id>})
            await state.redis.delete(*state.keys.user_keys(user, versions))
        log.info("dropped %d spooled events of %d users erased since they were spooled", dropped, len(erased_users))
    if kept:
        await append_rows(state, kept)


async def replay_spool_forever(state: AppState, every: float = 1.0) -> None:
    """Move spooled feedback into the stream whenever Redis answers (runs for the app's lifetime)."""
    while True:
        await asyncio.sleep(every)
        await replay_spool(state)


async def replay_spool(state: AppState) -> None:
    """One replay round, if anything is spooled and Redis is not known to be down. Events of users
    erased since they were spooled are dropped (:func:`append_unerased`). Never raises: a Redis
    failure opens the breaker, anything else (a disk error, a bug) is logged, and the next round
    tries again, so one bad file never stops the spool for good."""
    if not state.breaker.available:
        return
    files = await asyncio.to_thread(state.spool.files)
    state.spool.forget_gone(files)  # the figures /metrics shows lose files another process replayed
    if not files:
        return
    try:
        # the offline log, not only Redis's copy: an erasure asked while Redis was down is only there
        await state.erased.refresh(force=True)
        await state.spool.replay(lambda rows: append_unerased(state, rows))
    except redis.RedisError as exc:  # (an OSError here is the disk's: redis-py wraps socket errors)
        state.breaker.failed()
        log.warning("spool replay paused: redis unavailable (%s: %s)", type(exc).__name__, exc)
    except Exception:
        log.exception("spool replay failed; the next round tries again")
