"""A newly served version starts from the users' online state, not from a batch snapshot already behind.

A version's user vectors are trained on the data up to its ``trained_until``; events the API accepted
after that (while the retrain ran, or after the drain it read) live only in the users' online state
(:mod:`.user_state`). Without a pass here a user would get them back in the new version only with
their next event, which re-folds them. When the champion changes, :class:`CarryOver` finds the users
whose newest remembered event is newer than the new version's data and re-folds them through the same
path as an event would (:meth:`.online_learning.OnlineLearner.refold`), a page at a time between
stream batches, so live events never wait behind it. A pass broken by Redis starts again; users it
re-folded already are skipped, and two workers doing it at once are kept apart by the store's revision
check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from itertools import islice

from serving.worker.erasures import ErasedSubjects
from serving.worker.online_learning import OnlineLearner
from serving.worker.served_model import ServedModel

log = logging.getLogger(__name__)

PAGE = 200  # users re-folded per worker round: a page costs about as much as a batch of their events


class CarryOver:
    """Carries users' online state into each newly served champion version (see the module docstring)."""

    def __init__(self, learner: OnlineLearner, erasures: ErasedSubjects, online_boost: float) -> None:
        self.learner, self.erasures, self.online_boost = learner, erasures, online_boost
        self.done: str | None = None  # the version every user was carried into
        self._pass: tuple[str, Iterator[str]] | None = None
        self.carried = 0  # users re-folded by the current pass

    def pending(self, served: ServedModel | None) -> bool:
        """Whether users still have to be carried into ``served``."""
        return served is not None and served.version != self.done

    def step(self, served: ServedModel | None, others: Sequence[ServedModel] = ()) -> int:
        """Carry the next page of users into ``served`` (and ``others``). Returns the users looked at (0:
        the pass is done, or nothing is served)."""
        if not self.pending(served):
            return 0
        if self._pass is None or self._pass[0] != served.version:
            self._pass, self.carried = (
                (served.version, self.learner.user_state.users_with_events_after(served.trained_until_ms)),
                0,
            )
        try:
            users = list(islice(self._pass[1], PAGE))
        except Exception:
            self._pass = None  # a scan Redis broke off starts again (users carried already are skipped)
            raise
        if not users:
            self.done, self._pass = served.version, None
            log.info("carried %d users' online events into model version %s", self.carried, served.version)
            return 0
        self.erasures.refresh()
        erased = self.erasures.erased(users)
        self.carried += self.learner.refold([u for u in users if u not in erased], served, self.online_boost, others)
        return len(users)
