"""Steps 1-3 for a batch of events: read each user's state, compute their new vector, store it.

The maths is :mod:`models.online_update`; the Redis side is :mod:`serving.worker.user_state`. This
module joins them and retries the users whose state another worker changed between read and store.
The same path re-folds users into a newly served version without an event of theirs (:meth:`OnlineLearner.refold`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.online_update import increment_many, refold
from models.weighting import event_contributions
from serving.worker.events import Event
from serving.worker.served_model import ServedModel
from serving.worker.user_state import UserState, UserStateStore, UserUpdate

ROUNDS = 10  # reads and stores per batch before a user's conflicts are left to the next delivery


class ConflictingUpdates(RuntimeError):
    """Some users' state kept changing under this worker (others were updating them): their entries
    stay pending for another try; nothing is wrong with the entries themselves."""


class OnlineLearner:
    """Applies batches of events to users' online state (see :meth:`apply`)."""

    def __init__(self, user_state: UserStateStore, latency_log: Path | None = None) -> None:
        self.user_state = user_state
        self._latency = open(latency_log, "a") if latency_log else None  # noqa: SIM115 (kept open while running)

    def apply(
        self,
        events: Sequence[Event],
        served: ServedModel | None,
        online_boost: float,
        others: Sequence[ServedModel] = (),
    ) -> None:
        """Folds ``events`` into their users' vectors of ``served`` (the champion) and of each of ``others``
        (the versions running experiments serve), with ``online_boost``, and stores the users' state;
        events applied before are skipped. With no model served only the state (applied ids) is stored,
        and online state only ever holds tracks of the served catalog. Raises ConflictingUpdates when
        some users kept conflicting with other workers: their entries stay pending for another try."""
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user].append(event)
        contributions = event_contributions(pd.DataFrame([e.row for e in events]), served.durations if served else None)
        contribution = {id(e): float(c) for e, c in zip(events, contributions)}
        self._rounds(dict(by_user), contribution, served, online_boost, others if served else ())

    def refold(
        self, users: Sequence[str], served: ServedModel, online_boost: float, others: Sequence[ServedModel] = ()
    ) -> int:
        """Re-fold ``users`` into ``served`` (and each of ``others``) now, without waiting for an event of
        theirs: a newly served version starts from their online state (its trained vector plus the events
        they gave after its training data). Users whose vectors of those versions carry their updates
        already, or who gave nothing newer, are left as they are. Returns how many were re-folded; raises
        ConflictingUpdates as :meth:`apply`."""
        return self._rounds({user: [] for user in users}, {}, served, online_boost, others)

    def _rounds(
        self,
        pending: dict[str, list[Event]],
        contribution: Mapping[int, float],
        served: ServedModel | None,
        online_boost: float,
        others: Sequence[ServedModel],
    ) -> int:
        stored = 0
        for _ in range(ROUNDS):  # optimistic concurrency: users another worker touched meanwhile go again
            if not pending:
                return stored
            pending, done = self._apply_round(pending, contribution, served, online_boost, others)
            stored += done
        raise ConflictingUpdates(f"{len(pending)} users kept conflicting; their entries stay pending for another try")

    def _apply_round(
        self,
        users: dict[str, list[Event]],
        contribution: Mapping[int, float],
        served: ServedModel | None,
        online_boost: float,
        others: Sequence[ServedModel],
    ) -> tuple[dict[str, list[Event]], int]:
        """One read-compute-store of ``users`` (user -> their events; none: a re-fold only); returns those
        whose state changed meanwhile, and how many updates were stored."""
        version = served.version if served else ""
        # a version whose vector does not carry the user's online updates yet is re-folded: the user's
        # trained vector of it plus their remembered events newer than its training data (state.recent)
        states = self.user_state.read(version, users, [m.version for m in others])
        updates, steps = [], Increments(online_boost)
        for user, events in users.items():
            state = states[user]
            fresh = [e for e in events if e.event_id not in state.applied_event_ids]
            if fresh or (served is not None and not events and _behind(state, (served, *others))):
                contributions = [contribution[id(e)] for e in fresh]
                updates.append(_user_update(user, state, fresh, contributions, served, others, steps))
        steps.apply()
        stored = self.user_state.write(updates)
        now = time.time() * 1000
        conflicts = {}
        for update, ok in zip(updates, stored):
            if not ok:
                conflicts[update.user] = users[update.user]
            elif self._latency is not None:
                self._latency.write("".join(f"{now - e.accepted_ms:.1f}\n" for e in update.events))
        if self._latency is not None:
            self._latency.flush()
        return conflicts, sum(stored)


class Increments:
    """The incremental moves of one round's users, made together per model version once every user's
    update is built (:func:`models.online_update.increment_many`): per-user numpy calls cost more than
    the arithmetic of one event."""

    def __init__(self, online_boost: float) -> None:
        self.online_boost = online_boost
        self.pending: dict[
            str, tuple[ServedModel, list[tuple[UserUpdate, np.ndarray, UserState, list[tuple[str, float, int]]]]]
        ] = {}

    def add(
        self,
        model: ServedModel,
        update: UserUpdate,
        start: np.ndarray,
        state: UserState,
        events: list[tuple[str, float, int]],
    ) -> None:
        """Move ``update``'s vector of ``model`` from ``start`` by ``events`` at :meth:`apply`."""
        self.pending.setdefault(model.version, (model, []))[1].append((update, start, state, events))

    def apply(self) -> None:
        for model, moves in self.pending.values():
            events = [(i, track, c, ms) for i, (_, _, _, evs) in enumerate(moves) for track, c, ms in evs]
            vectors = increment_many(
                np.stack([start for _, start, _, _ in moves]),
                events,
                [state.online_scores for _, _, state, _ in moves],
                fold=model.fold,
                index=model.index,
                recency=model.recency,
                online_boost=self.online_boost,
            )
            for (update, _, _, _), vector in zip(moves, vectors):
                if model.version == update.version:
                    update.vector = vector
                else:
                    update.others[model.version] = vector
        self.pending.clear()


def _behind(state: UserState, models: Sequence[ServedModel]) -> bool:
    """Whether a version of ``models`` whose vector does not carry the user's updates has not learnt
    some of their remembered events (newer than its training data)."""
    behind = [m.trained_until_ms for m in models if m.version not in state.folded]
    return bool(behind) and any(ms > until for ms, _, _ in state.recent or () for until in behind)


def _user_update(
    user: str,
    state: UserState,
    fresh: list[Event],
    contributions: list[float],
    served: ServedModel | None,
    others: Sequence[ServedModel],
    steps: Increments,
) -> UserUpdate:
    """Step 2 for one user: the update that applies ``fresh`` to ``state`` (incremental moves are left
    to ``steps``, made for the whole round at once).

    The online scores follow the champion: re-folded with it when it changes. The vectors of the other
    versions move by the same events: incrementally from the champion's scores once they carry the
    user's updates, else re-folded from their trained vector (their own training cutoff decides which
    remembered events count)."""
    update = UserUpdate(user, state.revision, served.version if served else "", None, fresh, contributions)
    if served is None:
        return update
    update.known = {e.track_id for e in fresh if e.track_id in served.index}
    events = [(e.track_id, c, e.event_ms) for e, c in zip(fresh, contributions)]
    for model in (served, *others):
        vector = state.vector if model is served else state.others.get(model.version)
        start = vector if vector is not None else model.fold.tail.copy()
        if model.version not in state.folded:
            start, scores = refold(
                start,
                events,
                state.recent or [],
                fold=model.fold,
                index=model.index,
                recency=model.recency,
                online_boost=steps.online_boost,
            )
            if model is served:
                update.online_scores = {track: score for track, score in scores.items() if track in served.index}
        elif start.shape[0] == model.fold.matrix.shape[1]:
            steps.add(model, update, start, state, events)
        # (a stored vector of another length is not of this model: it stays as it is)
        if model is served:
            update.vector = start.astype(np.float32)
        else:
            update.others[model.version] = start.astype(np.float32)
    learnt = [*(m.version for m in others), served.version]
    update.folded = [v for v in state.folded if v not in learnt] + learnt
    if update.online_scores is not None:  # a re-fold replaces every online score
        update.scores_after = dict(update.online_scores)
    elif state.complete:
        update.scores_after = dict(state.online_scores)
        for track, contribution, _ in events:
            if track in update.known:  # the store adds to the scores of the served catalog's tracks only
                update.scores_after[track] = update.scores_after.get(track, 0.0) + contribution
    return update
