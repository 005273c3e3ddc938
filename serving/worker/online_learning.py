"""Steps 1-3 for a batch of events: read each user's state, compute their new vector, store it.

The maths is :mod:`models.online_update`; the Redis side is :mod:`serving.worker.user_state`. This
module joins them and retries the users whose state another worker changed between read and store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

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

    def apply(self, events: Sequence[Event], served: ServedModel | None, online_boost: float) -> None:
        """Folds ``events`` into their users' vectors of ``served`` (with ``online_boost``) and stores the
        users' state; events applied before are skipped. With no model served only the state (applied
        ids) is stored, and online state only ever holds tracks of the served catalog. Raises ConflictingUpdates when some users kept
        conflicting with other workers: their entries stay pending for another try."""
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
            pending = self._apply_round(pending, contribution, served, online_boost)
        raise ConflictingUpdates(f"{len(pending)} users kept conflicting; their entries stay pending for another try")

    def _apply_round(
        self, users: dict[str, list[Event]], contribution: Mapping[int, float], served: ServedModel | None, online_boost: float
    ) -> dict[str, list[Event]]:
        """One read-compute-store of ``users``; returns those whose state changed meanwhile."""
        version = served.version if served else ""
        states = self.user_state.read(version, users)
        # users whose vector carries online updates for another version (or none yet) are re-folded onto the served one
        recent = self.user_state.recent_events([u for u, s in states.items() if served and s.folded_version != version])
        updates = []
        for user, events in users.items():
            state = states[user]
            fresh = [e for e in events if e.event_id not in state.applied_event_ids]
            if fresh:
                contributions = [contribution[id(e)] for e in fresh]
                updates.append(_user_update(user, state, fresh, contributions, served, recent.get(user), online_boost))
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
    recent: list[tuple[int, str, float]] | None,
    online_boost: float,
) -> UserUpdate:
    """Step 2 for one user: the update that applies ``fresh`` to ``state`` (``recent``: their remembered
    events when they are re-folded onto a new version, else None)."""
    update = UserUpdate(user, state.revision, served.version if served else "", None, fresh, contributions)
    if served is None:
        return update
    update.known = {e.track_id for e in fresh if e.track_id in served.index}
    vector = state.vector if state.vector is not None else served.fold.tail.copy()
    events = [(e.track_id, c) for e, c in zip(fresh, contributions)]
    model = {"fold": served.fold, "index": served.index, "online_boost": online_boost}
    if recent is not None:
        update.vector, scores = refold(vector, events, recent, served.trained_until_ms, **model)
        update.online_scores = {track: score for track, score in scores.items() if track in served.index}
    else:
        update.vector = increment(vector, events, state.online_scores, **model)
    return update
