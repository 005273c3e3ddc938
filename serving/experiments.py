"""Experiment assignment in the serving path: running experiments, refreshed from the experiment store in Redis
every few seconds, each with its precomputed assigner (a hash per request).

A response belongs to at most one experiment: the first (by layer, then id) of its surface that is
within its dates and has the user in its share of the layer. Experiments on different surfaces, in
different layers, run on the same users independently."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis.asyncio as aredis
from pydantic import ValidationError

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from experiments.assignment import Assigner
from experiments.definition import Experiment, Variant
from serving.observability import STAGE_LATENCY

log = logging.getLogger(__name__)


class ExperimentRouter:
    def __init__(
        self, client: aredis.Redis, keys: RedisKeys, refresh_seconds: float = 5.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._client, self._key, self.clock = client, keys.experiments(), clock
        self.refresh_seconds = refresh_seconds
        self._assigners: list[Assigner] = []
        self._checked = -1e9

    def expire(self) -> None:
        """Reload at the next request (this process changed the experiment store: its own change applies at once;
        other API processes see it within ``refresh_seconds``)."""
        self._checked = -1e9

    async def refresh(self) -> None:
        """Reload running experiments when due; Redis errors keep the current set."""
        now = self.clock.monotonic()  # the injected clock: a test moves it past the interval instead of resetting state
        if now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        try:
            raw = await self._client.hvals(self._key)
        except (aredis.RedisError, OSError):
            return
        running = []
        for item in raw:
            try:
                experiment = Experiment.model_validate_json(item)
            except ValidationError as exc:  # a bad definition must not take serving down
                log.warning("ignoring invalid experiment definition: %s", exc)
                continue
            if experiment.status == "running":
                running.append(Assigner(experiment))
        self._assigners = sorted(running, key=lambda a: (a.experiment.layer, a.experiment.id))

    def assign(self, user_id: str, surface: str = "recommendations") -> tuple[Experiment, Variant] | None:
        """The experiment a response of ``surface`` to ``user_id`` belongs to now, and the user's variant."""
        with STAGE_LATENCY.labels("experiment_assignment").time():
            return self._assign(user_id, surface)

    def _assign(self, user_id: str, surface: str) -> tuple[Experiment, Variant] | None:
        now = datetime.fromtimestamp(self.clock.now(), tz=UTC)
        for assigner in self._assigners:
            if assigner.experiment.surface != surface or not assigner.experiment.active_at(now):
                continue
            name = assigner.variant(user_id)
            if name is not None:
                experiment = assigner.experiment
                return experiment, next(v for v in experiment.variants if v.name == name)
        return None
