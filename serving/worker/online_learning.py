"""Steps 1-3 for a batch of events: read each user's state, compute their new vector, store it.

The maths is :mod:`models.online_update`; the Redis side is :mod:`serving.worker.user_state`. This
module joins them and retries the users whose state another worker changed between read and store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.online_update import increment, refold
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

    def apply(self, events: Sequence[Event], served: ServedModel | None, online_boost: float, others: Sequence[ServedModel] = ()) -> None:
        """Folds ``events`` into their users' vectors of ``served`` (the champion) and of each of ``others``
        (the versions running experiments serve), with ``online_boost``, and stores the users' state;
        events applied before are skipped. With no model served only the state (applied ids) is stored,
        and online state only ever holds tracks of the served catalog. Raises ConflictingUpdates when
        some users kept conflicting with other workers: their entries stay pending for another try."""
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user].append(event)
        contributions = event_contributions(
            pd.DataFrame([e.row for e in events]), served.durations if served else None
        )  # fmt: skip
        contribution = {id(e): float(c) for e, c in zip(events, contributions)}
        pending = dict(by_user)
        for _ in range(ROUNDS):  # optimistic concurrency: users another worker touched meanwhile go again
            if not pending:
                return
            pending = self._apply_round(pending, contribution, served, online_boost, others if served else ())
        raise ConflictingUpdates(f"{len(pending)} users kept conflicting; their entries stay pending for another try")

    def _apply_round(
        self, users: dict[str, list[Event]], contribution: Mapping[int, float], served: ServedModel | None, online_boost: float,
        others: Sequence[ServedModel],
    ) -> dict[str, list[Event]]:
        """One read-compute-store of ``users``; returns those whose state changed meanwhile."""
        version = served.version if served else ""
        states = self.user_state.read(version, users, [m.version for m in others])
        # a version whose vector does not carry the user's online updates yet is re-folded: the user's
        # trained vector of it plus their remembered events newer than its training data
        learnt = [version, *(m.version for m in others)]
        recent = self.user_state.recent_events([u for u, s in states.items() if served and not set(learnt) <= set(s.folded)])
        updates = []
        for user, events in users.items():
            state = states[user]
            fresh = [e for e in events if e.event_id not in state.applied_event_ids]
            if fresh:
                contributions = [contribution[id(e)] for e in fresh]
                updates.append(_user_update(user, state, fresh, contributions, served, others, recent.get(user), online_boost))
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
        return conflicts


def _user_update(
    user: str,
    state: UserState,
    fresh: list[Event],
    contributions: list[float],
    served: ServedModel | None,
    others: Sequence[ServedModel],
    recent: list[tuple[int, str, float]] | None,
    online_boost: float,
) -> UserUpdate:
    """Step 2 for one user: the update that applies ``fresh`` to ``state`` (``recent``: their remembered
    events when some version is re-folded, else None).

    The online scores follow the champion: re-folded with it when it changes. The vectors of the other
    versions move by the same events: incrementally from the champion's scores once they carry the
    user's updates, else re-folded from their trained vector (their own training cutoff decides which
    remembered events count)."""
    update = UserUpdate(user, state.revision, served.version if served else "", None, fresh, contributions)
    if served is None:
        return update
    update.known = {e.track_id for e in fresh if e.track_id in served.index}
    events = [(e.track_id, c) for e, c in zip(fresh, contributions)]
    update.vector, scores = _moved(served, state.vector, state, events, recent, online_boost)
    if scores is not None:
        update.online_scores = {track: score for track, score in scores.items() if track in served.index}
    for other in others:
        update.others[other.version], _ = _moved(other, state.others.get(other.version), state, events, recent, online_boost)
    learnt = [*(m.version for m in others), served.version]
    update.folded = [v for v in state.folded if v not in learnt] + learnt
    return update


def _moved(
    model: ServedModel,
    vector: np.ndarray | None,
    state: UserState,
    events: list[tuple[str, float]],
    recent: list[tuple[int, str, float]] | None,
    online_boost: float,
) -> tuple[np.ndarray, dict[str, float] | None]:
    """The user's vector of ``model`` after ``events``, and their re-folded online scores when it was
    re-folded (None: moved incrementally)."""
    start = vector if vector is not None else model.fold.tail.copy()
    kwargs = {"fold": model.fold, "index": model.index, "online_boost": online_boost}
    if model.version in state.folded:
        return increment(start, events, state.online_scores, **kwargs), None
    return refold(start, events, recent or [], model.trained_until_ms, **kwargs)
