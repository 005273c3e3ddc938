"""Experiment assignment in the serving path: running experiments of a surface, refreshed from the
registry in Redis every few seconds, each with its precomputed assigner (a hash per request)."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aredis
from pydantic import ValidationError

from core.contracts.redis_keys import RedisKeys
from experiments.assignment import Assigner
from experiments.definition import Experiment, Variant

log = logging.getLogger(__name__)


class ExperimentRouter:
    def __init__(self, client: aredis.Redis, keys: RedisKeys, surface: str = "recommendations", refresh_seconds: float = 5.0) -> None:
        self._client, self._key, self.surface = client, keys.experiments(), surface
        self.refresh_seconds = refresh_seconds
        self._assigners: list[Assigner] = []
        self._checked = -1e9

    async def refresh(self) -> None:
        """Reload running experiments when due; Redis errors keep the current set."""
        if time.monotonic() - self._checked < self.refresh_seconds:
            return
        self._checked = time.monotonic()
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
            if experiment.status == "running" and experiment.surface == self.surface:
                running.append(Assigner(experiment))
        self._assigners = sorted(running, key=lambda a: a.experiment.id)

    def assign(self, user_id: str) -> tuple[Experiment, Variant] | None:
        """The first running experiment that has the user in its allocation, and the user's variant."""
        for assigner in self._assigners:
            name = assigner.variant(user_id)
            if name is not None:
                experiment = assigner.experiment
                return experiment, next(v for v in experiment.variants if v.name == name)
        return None
