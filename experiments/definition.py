"""Experiment definitions: what is compared, on whom, judged by which metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METRICS = ("ctr", "completion_rate", "skip_rate", "listening_minutes", "mean_rating")
# what a variant's ``algorithm`` may name: the serving strategies, or a model algorithm (meaning "the
# published model, which must be of that algorithm")
SERVING_ALGORITHMS = ("popularity", "content")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Variant(BaseModel):
    """One arm: an algorithm, or a registered model by alias or version, and its share of traffic."""

    model_config = ConfigDict(extra="forbid")

    name: str
    algorithm: str | None = None
    model_alias: str | None = None
    model_version: str | None = None
    weight: float = Field(..., gt=0.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"variant name {value!r} must be lowercase letters, digits, _ or - (max 64)")
        return value

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str | None) -> str | None:
        from models import ALGORITHMS

        known = (*SERVING_ALGORITHMS, *ALGORITHMS)
        if value is not None and value not in known:
            raise ValueError(f"unknown algorithm {value!r}; known: {', '.join(sorted(set(known)))}")
        return value

    @property
    def serves_champion(self) -> bool:
        """The champion model answers for this variant: alias ``champion``, or a model algorithm by name."""
        return self.model_alias == "champion" or (
            self.algorithm is not None and self.algorithm not in SERVING_ALGORITHMS
        )

    @property
    def other_model(self) -> str | None:
        """``model alias 'x'`` or ``model version n`` when the variant is pinned to a model other than the champion."""
        if self.model_version is not None:
            return f"model version {self.model_version}"
        if self.model_alias not in (None, "champion"):
            return f"model alias {self.model_alias!r}"
        return None

    @model_validator(mode="after")
    def _one_target(self) -> Variant:
        targets = [t for t in (self.algorithm, self.model_alias, self.model_version) if t]
        if len(targets) != 1:
            raise ValueError(f"variant {self.name!r} needs exactly one of algorithm, model_alias, model_version")
        return self


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    hypothesis: str = ""
    surface: Literal["recommendations", "similar", "batch"] = "recommendations"
    design: Literal["ab", "interleaving"] = Field(
        "ab",
        description="ab: each user sees one variant; interleaving: every list merges two rankers (team draft) and clicks credit the ranker that contributed the track.",
    )
    layer: str = Field(
        "default",
        description="Experiments in different layers are assigned independently; one layer's traffic is split exclusively among its experiments.",
    )
    layer_offset: float = Field(
        0.0, ge=0.0, lt=1.0, description="Where this experiment's share of its layer's traffic starts (0-1)."
    )
    variants: list[Variant] = Field(..., min_length=2)
    traffic_allocation: float = Field(
        1.0, gt=0.0, le=1.0, description="Share of the layer's users in the experiment, from layer_offset on."
    )
    primary_metric: Literal["ctr", "completion_rate", "skip_rate", "listening_minutes", "mean_rating"] = "ctr"
    secondary_metrics: list[str] = Field(default_factory=list)
    guardrail_metrics: list[str] = Field(default_factory=lambda: ["skip_rate"])
    start: datetime | None = None
    end: datetime | None = None
    min_sample_size: int = Field(1000, ge=1, description="Users per variant before a verdict is allowed.")
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    status: Literal["draft", "running", "stopped"] = "draft"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"experiment id {value!r} must be lowercase letters, digits, _ or - (max 64)")
        return value

    @field_validator("layer")
    @classmethod
    def _layer(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"layer {value!r} must be lowercase letters, digits, _ or - (max 64)")
        return value

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("secondary_metrics", "guardrail_metrics")
    @classmethod
    def _known_metrics(cls, values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        total = sum(v.weight for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"variant weights must sum to 1 (they sum to {total:g})")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique (got {names})")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.layer_offset + self.traffic_allocation > 1.0 + 1e-9:
            raise ValueError(
                f"layer_offset {self.layer_offset:g} + traffic_allocation {self.traffic_allocation:g} is past the layer's traffic (1.0)"
            )
        if self.design == "interleaving" and len(self.variants) != 2:
            raise ValueError(
                f"an interleaving experiment compares exactly two rankers (got {len(self.variants)} variants)"
            )
        if self.design == "interleaving" and self.surface == "similar":
            raise ValueError(
                "design interleaving merges ranked lists of the recommendations and batch surfaces; similar-track lists are not interleaved"
            )
        forced = [v.name for v in self.variants if v.algorithm in SERVING_ALGORITHMS]
        if self.surface == "similar" and forced:
            raise ValueError(
                f"variants {forced} name algorithm popularity or content, which similar-track lists do not use: "
                "on the similar surface each variant names a model (model_alias or model_version)"
            )
        return self

    def overlaps(self, other: Experiment) -> bool:
        """Both would take the same users of one layer at some common time: same layer, overlapping
        shares of its traffic, overlapping dates. (Experiments in different layers never overlap:
        their assignments are independent.)"""
        if self.id == other.id or self.layer != other.layer:
            return False
        shares = max(self.layer_offset, other.layer_offset) < min(
            self.layer_offset + self.traffic_allocation, other.layer_offset + other.traffic_allocation
        )
        lo, hi = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        return shares and max(self.start or lo, other.start or lo) < min(self.end or hi, other.end or hi)

    def active_at(self, when: datetime) -> bool:
        """Running and within its dates at ``when``: only then are users assigned and events counted."""
        return (
            self.status == "running"
            and (self.start is None or when >= self.start)
            and (self.end is None or when < self.end)
        )

    def with_status(self, status: str) -> Experiment:
        """The experiment moved to ``status``; ValueError saying why for a move that is not allowed
        (draft -> running -> stopped; a stopped experiment stays stopped: its analysis is final)."""
        allowed = {"draft": {"running", "stopped"}, "running": {"stopped"}, "stopped": set()}
        if status == self.status:
            return self
        if status not in allowed.get(self.status, set()):
            raise ValueError(
                f"experiment {self.id!r} is {self.status}: it cannot become {status} "
                f"({'stopped is final: create a new experiment' if self.status == 'stopped' else 'a running experiment can only be stopped'})"
            )
        return self.model_copy(update={"status": status})

    @property
    def control(self) -> Variant:
        """The first variant is the control every other is compared with."""
        return self.variants[0]

    @classmethod
    def from_yaml(cls, path: Path) -> Experiment:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))
