"""The experiment store: definitions and their status in Redis, shared by every API process, the
pipeline and the CLI. YAML files in the definitions folder are how experiments are versioned in git;
importing them registers the ones not registered yet (a status changed through the API is kept)."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis
from pydantic import ValidationError

from core.contracts.redis_keys import RedisKeys
from core.vectorstore import VectorStore
from experiments.definition import Experiment


class ExperimentConflict(ValueError):
    pass


class ExperimentStore:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.r = client
        self.key = keys.experiments()

    def all(self) -> list[Experiment]:
        return sorted((Experiment.model_validate_json(raw) for raw in self.r.hvals(self.key)), key=lambda e: e.id)

    def get(self, experiment_id: str) -> Experiment | None:
        raw = self.r.hget(self.key, experiment_id)
        return None if raw is None else Experiment.model_validate_json(raw)

    def running(self, surface: str | None = None) -> list[Experiment]:
        return [e for e in self.all() if e.status == "running" and (surface is None or e.surface == surface)]

    def put(self, experiment: Experiment, replace: bool = False) -> Experiment:
        """Register ``experiment``; refuses an existing id (unless ``replace``) and a running experiment
        that overlaps another running one on the same surface."""
        if not replace and self.r.hexists(self.key, experiment.id):
            raise ExperimentConflict(f"experiment {experiment.id!r} already exists")
        if experiment.status == "running":
            self._check_overlap(experiment)
        self.r.hset(self.key, experiment.id, experiment.model_dump_json())
        return experiment

    def set_status(self, experiment_id: str, status: str) -> Experiment:
        """Move an experiment to ``status`` (ValueError for a move that is not allowed, naming why)."""
        current = self.get(experiment_id)
        if current is None:
            raise KeyError(f"no experiment {experiment_id!r}")
        return self.put(current.with_status(status), replace=True)

    def import_folder(self, folder: Path) -> list[str]:
        """Register every ``*.yaml`` definition not registered yet; returns their ids. A file that does
        not validate raises ValueError naming the file and the problem."""
        added = []
        for path in sorted(Path(folder).glob("*.y*ml")):
            try:
                experiment = Experiment.from_yaml(path)
            except ValidationError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            if not self.r.hexists(self.key, experiment.id):
                self.put(experiment)
                added.append(experiment.id)
        return added

    def _check_overlap(self, experiment: Experiment) -> None:
        for other in self.running():
            if experiment.overlaps(other):
                raise ExperimentConflict(
                    f"experiment {experiment.id!r} would take the same users of layer {experiment.layer!r} as {other.id!r} "
                    f"(traffic {experiment.layer_offset:g}-{experiment.layer_offset + experiment.traffic_allocation:g} vs "
                    f"{other.layer_offset:g}-{other.layer_offset + other.traffic_allocation:g}) at the same time: put one in another "
                    "layer, give them disjoint shares of the layer (layer_offset, traffic_allocation) or non-overlapping dates"
                )


def served_versions(client: redis.Redis, keys: RedisKeys, store: VectorStore) -> list[str]:
    """The published model versions the variants of running experiments serve (pinned versions, and the
    versions their aliases point at in ``store``), in a stable order. The one answer the worker (which
    versions learn online) and the release's retention (which versions must not be retired) share: if
    they drifted, a version still learning could be retired. A definition that does not parse serves
    nothing (the API validates them; a bad one must not stop the worker)."""
    versions: list[str] = []
    for raw in client.hvals(keys.experiments()):
        try:
            definition = orjson.loads(raw)
            if definition.get("status") != "running":
                continue
            for variant in definition["variants"]:
                version = variant.get("model_version") or (
                    store.alias(variant["model_alias"]) if variant.get("model_alias") else None
                )
                if version and str(version) not in versions:
                    versions.append(str(version))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue
    published = set(store.versions())
    return [v for v in versions if v in published]
