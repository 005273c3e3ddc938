"""The guarded rollout: a candidate version served to a share of listeners by an experiment of its own
layer, judged after every drain (:mod:`experiments.rollout_rules`), stepped up, promoted or rolled back.

State lives in Redis (``RedisKeys.rollout``, a hash) where every process reads it: the version, the
champion it is measured against, its experiment, its ``share`` and ``status`` (running, promoted,
rolled_back, superseded) and ``paused`` (a paused rollout is looked at but never moved). The share
reaches the API through the experiment's variant weights (every API process reloads experiments
within ``refresh_seconds``); :meth:`Rollouts.set_share` and :meth:`Rollouts.pause` are the two
levers a feature flag pulls.

The rollout's experiment (id ``rollout-v<version>-<time>``, layer ``rollout``) has two variants,
``champion`` (alias champion, the control) and ``candidate`` (alias candidate, first at the share):
a listener in a running A/B test of another layer keeps that test's variant (the router takes the
first experiment by layer name), and widening the share moves listeners from champion to candidate
only, never back. Both arms learn online: the feedback worker keeps the vectors of every version a
running experiment serves (:func:`experiments.store.served_versions`).

Aliases move through :mod:`core.release` only (candidate in, candidate promoted, candidate withdrawn).
Every decision is kept: a row in the decisions list (the report's table), a tag on the MLflow version,
a count per decision (Prometheus, through the API's ``/metrics``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import pandas as pd
import redis

from core import release
from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.redis_keys import RedisKeys
from core.model_registry import CANDIDATE, CHAMPION, ModelRegistry
from core.vectorstore import VectorStore
from experiments.definition import Experiment, Variant
from experiments.metrics import RATIO_METRICS, user_metrics
from experiments.rollout_rules import (
    GUARDRAILS,
    LATENCY_BUCKETS_MS,
    PROMOTE,
    ROLLBACK,
    STEP_UP,
    RolloutDecision,
    RolloutPolicy,
    VersionHealth,
    decide,
)
from experiments.stats import RatioMoments
from experiments.store import ExperimentStore

LAYER = "rollout"
RUNNING, PROMOTED, ROLLED_BACK, SUPERSEDED = "running", "promoted", "rolled_back", "superseded"
DECISIONS_KEPT = 1000  # rows of the decisions list (newest first); older ones are trimmed
HEALTH_TTL_SECONDS = 14 * 86_400  # a version's health counters outlive any rollout of it
START = "start"
# A step's window opens this much before the step began: API hosts stamp events with their own clocks, a
# little apart. Harmless to the window: a listener moved at the step is served by both arms within it and
# left out; the others stayed on one arm.
STEP_CLOCK_SLACK_SECONDS = 300.0


@dataclass(frozen=True)
class RolloutState:
    version: str
    champion: str
    experiment_id: str
    share: float
    status: str
    started_at: float
    updated_at: float
    candidate_users_at_step: int = 0
    paused: bool = False
    reason: str = ""
    step_started_at: float = 0.0  # when the current share began: each step is judged on its own window

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> RolloutState:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            version=text["version"],
            champion=text["champion"],
            experiment_id=text["experiment_id"],
            share=float(text["share"]),
            status=text["status"],
            started_at=float(text["started_at"]),
            updated_at=float(text["updated_at"]),
            candidate_users_at_step=int(text.get("candidate_users_at_step", "0")),
            paused=text.get("paused", "0") == "1",
            reason=text.get("reason", ""),
            step_started_at=float(text.get("step_started_at", text["started_at"])),
        )

    def as_hash(self) -> dict[str, str]:
        values = asdict(self)
        values["paused"] = "1" if self.paused else "0"
        return {k: str(v) for k, v in values.items()}

    @property
    def running(self) -> bool:
        return self.status == RUNNING


def read_health(client: redis.Redis, keys: RedisKeys, version: str) -> VersionHealth:
    """What every API process answered with ``version`` (:mod:`serving.version_health` writes it)."""
    raw = {k.decode(): int(v) for k, v in client.hgetall(keys.version_health(version)).items()}
    return VersionHealth(
        requests=raw.get("requests", 0),
        errors=raw.get("errors", 0),
        buckets=tuple(raw.get(f"b{i}", 0) for i in range(len(LATENCY_BUCKETS_MS) + 1)),
    )


def arm_moments(events: pd.DataFrame, experiment_id: str) -> dict[str, tuple[RatioMoments, RatioMoments]]:
    """Per guardrail metric, the (champion, candidate) arms' moments of per-user sums from the stored
    events of the rollout's experiment (metrics no user of an arm has a denominator for are left out)."""
    per_user = user_metrics(events, experiment_id)
    arms = {arm: per_user[per_user["variant"] == arm] for arm in ("champion", "candidate")}
    out = {}
    for metric in GUARDRAILS:
        num, den = RATIO_METRICS[metric]
        if all(arm[den].sum() > 0 for arm in arms.values()):
            out[metric] = tuple(
                RatioMoments.of_users(arm[num].to_numpy(), arm[den].to_numpy()) for arm in arms.values()
            )
    return out


def step_window(events: pd.DataFrame, experiment_id: str, since: float) -> pd.DataFrame:
    """The events of the rollout's experiment stamped at or after ``since`` (the current step's start,
    seconds since the epoch, less :data:`STEP_CLOCK_SLACK_SECONDS`) of the listeners served by one arm only within it. A step up moves listeners
    from the champion arm to the candidate arm: judged on all events since the rollout began, a moved
    listener's earlier sessions counted for the champion and the later ones (favourite tracks already
    played) for the candidate, and a copy of the champion was rolled back for skip rate +12.6% (bench/rollout.py)."""
    ev = events[events["experiment_id"] == experiment_id]
    stamps = pd.to_datetime(ev["timestamp"], utc=True)
    ev = ev[stamps >= pd.Timestamp(since - STEP_CLOCK_SLACK_SECONDS, unit="s", tz="UTC")]
    arms_per_user = ev.groupby("user_id")["variant"].nunique()
    return ev[ev["user_id"].isin(arms_per_user.index[arms_per_user == 1])]


def decide_step(
    events: pd.DataFrame,
    experiment_id: str,
    step_started_at: float,
    health: VersionHealth,
    share: float,
    policy: RolloutPolicy,
) -> RolloutDecision:
    """The decision at one look on the current step's window (:func:`step_window`) at the step's share of
    alpha (:meth:`RolloutPolicy.per_step`), so an A/A rollout is rolled back at most ``alpha`` of the time
    over all its steps."""
    window = step_window(events, experiment_id, step_started_at)
    return decide(arm_moments(window, experiment_id), health, share, policy.per_step())


def rollout_experiment(experiment_id: str, version: str, share: float, policy: RolloutPolicy) -> Experiment:
    """The rollout's experiment definition at ``share``. No dates: it runs until the rollout stops it
    (no API clock decides anything about it)."""
    return Experiment(
        id=experiment_id,
        name=f"rollout of version {version}",
        hypothesis=f"version {version} serves listeners at least as well as the champion (click-through within "
        f"{policy.ctr_margin:.0%}, no harm to skips or completions)",
        layer=LAYER,
        variants=[
            Variant(name="champion", model_alias=CHAMPION, weight=round(1.0 - share, 6)),
            Variant(name="candidate", model_alias=CANDIDATE, weight=round(share, 6)),
        ],
        primary_metric="ctr",
        secondary_metrics=["completion_rate"],
        guardrail_metrics=["skip_rate"],
        min_sample_size=policy.min_users,
        alpha=policy.alpha,
        status="running",
    )


class Rollouts:
    """The rollout of one deployment: its state in Redis, its experiment, its aliases."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        registry: ModelRegistry,
        store: VectorStore,
        policy: RolloutPolicy,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.r, self.keys, self.registry, self.store = client, keys, registry, store
        self.policy, self.clock = policy, clock
        self.experiments = ExperimentStore(client, keys)

    # --- reading --------------------------------------------------------------------------------
    def current(self) -> RolloutState | None:
        """The latest rollout (running or ended), or None when there never was one."""
        raw = self.r.hgetall(self.keys.rollout())
        return RolloutState.from_hash(raw) if raw else None

    def decisions(self, limit: int = DECISIONS_KEPT) -> list[dict]:
        """The decisions taken, newest first."""
        return [json.loads(row) for row in self.r.lrange(self.keys.rollout_decisions(), 0, limit - 1)]

    def decision_counts(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.rollout_decision_counts()).items()}

    # --- moving it ------------------------------------------------------------------------------
    def start(self, version: str, reason: str) -> RolloutState:
        """Serve the candidate ``version`` (already ``candidate`` in MLflow and published in Redis:
        :func:`core.release.make_candidate`, :func:`core.release.publish_aliases`) to the canary share.
        A rollout still running for another version is superseded (its candidate withdrawn). Raises
        LookupError when there is no champion to measure against, or the version is not published."""
        champion = self.store.alias(CHAMPION)
        if champion is None:
            raise LookupError("no champion is published: a rollout measures a candidate against one (run the pipeline)")
        if version == champion:
            raise LookupError(f"version {version} is the champion already: nothing to roll out")
        if self.store.alias(CANDIDATE) != version:
            raise LookupError(
                f"version {version} is not published as candidate in Redis (it is {self.store.alias(CANDIDATE)}): "
                "make it candidate and publish it first (core.release.make_candidate, publish_aliases)"
            )
        previous = self.current()
        if previous is not None and previous.running:
            if previous.version == version:
                return previous
            self._end(previous, SUPERSEDED, f"superseded by version {version}")
            if self.registry.alias(CANDIDATE) == previous.version:  # the new one has taken the alias already otherwise
                release.withdraw_candidate(self.registry, self.store, previous.version)
        now = self.clock.now()
        started = datetime.fromtimestamp(now, tz=UTC)
        experiment_id = f"rollout-v{version}-{started:%Y%m%d%H%M%S}"
        share = self.policy.ramp[0]
        self.experiments.put(rollout_experiment(experiment_id, version, share, self.policy))
        state = RolloutState(version, champion, experiment_id, share, RUNNING, now, now, 0, False, reason, now)
        self.r.delete(self.keys.rollout())
        self.r.hset(self.keys.rollout(), mapping=state.as_hash())
        self._record(state, START, [reason], {})
        self.registry.record_rollout(version, "candidate", f"rollout {experiment_id} at share {share:g}: {reason}")
        return state

    def set_share(self, share: float, reason: str) -> RolloutState:
        """Serve the running rollout's candidate to ``share`` of the layer's listeners (0 < share < 1)."""
        state = self._running()
        if not 0.0 < share < 1.0:
            raise ValueError(f"share must lie strictly between 0 and 1 (got {share}); 1 means promote")
        experiment = self.experiments.get(state.experiment_id)
        if experiment is None:
            raise LookupError(f"the rollout's experiment {state.experiment_id!r} is gone from the experiment store")
        weights = {"champion": round(1.0 - share, 6), "candidate": round(share, 6)}
        variants = [v.model_copy(update={"weight": weights[v.name]}) for v in experiment.variants]
        self.experiments.put(experiment.model_copy(update={"variants": variants}), replace=True)
        moved = replace(state, share=share, updated_at=self.clock.now(), reason=reason)
        self.r.hset(self.keys.rollout(), mapping=moved.as_hash())
        return moved

    def pause(self, paused: bool, reason: str) -> RolloutState:
        """Pause (or resume) the running rollout: looked at, never moved, while paused."""
        state = self._running()
        moved = replace(state, paused=paused, updated_at=self.clock.now(), reason=reason)
        self.r.hset(self.keys.rollout(), mapping=moved.as_hash())
        return moved

    def look(self, events: pd.DataFrame) -> RolloutDecision | None:
        """The decision on the running rollout from its stored ``events`` and the candidate's health; None
        when no rollout runs. Takes no action (:meth:`act` does)."""
        state = self.current()
        if state is None or not state.running:
            return None
        health = read_health(self.r, self.keys, state.version)
        since = state.step_started_at or state.started_at
        return decide_step(events, state.experiment_id, since, health, state.share, self.policy)

    def act(self, decision: RolloutDecision) -> RolloutState:
        """Carry ``decision`` out on the running rollout (a paused one only records it) and record it."""
        state = self._running()
        reasons = list(decision.reasons)
        if state.paused and decision.action != "hold":
            reasons = [f"paused: would {decision.action}", *reasons]
            self._record(state, "hold", reasons, decision.as_dict())
            return state
        reason = "; ".join(reasons)
        if decision.action == ROLLBACK:
            release.withdraw_candidate(self.registry, self.store, state.version)
            state = self._end(state, ROLLED_BACK, reason)
        elif decision.action == PROMOTE:
            release.promote_candidate(self.registry, self.store, state.version)
            state = self._end(state, PROMOTED, reason)
        elif decision.action == STEP_UP:
            # the next look judges the new step on its own window: users counted afresh from now
            state = replace(
                self.set_share(decision.share, reason), candidate_users_at_step=0, step_started_at=self.clock.now()
            )
            self.r.hset(self.keys.rollout(), mapping=state.as_hash())
        else:
            state = replace(state, updated_at=self.clock.now(), reason=reason)
            self.r.hset(self.keys.rollout(), mapping=state.as_hash())
        self.registry.record_rollout(state.version, decision.action, reason)
        self._record(state, decision.action, reasons, decision.as_dict())
        return state

    # --- inside ---------------------------------------------------------------------------------
    def _running(self) -> RolloutState:
        state = self.current()
        if state is None or not state.running:
            raise LookupError("no rollout is running")
        return state

    def _end(self, state: RolloutState, status: str, reason: str) -> RolloutState:
        experiment = self.experiments.get(state.experiment_id)
        if experiment is not None and experiment.status == "running":
            self.experiments.set_status(state.experiment_id, "stopped")
        ended = replace(
            state, status=status, share=1.0 if status == PROMOTED else 0.0, updated_at=self.clock.now(), reason=reason
        )
        self.r.hset(self.keys.rollout(), mapping=ended.as_hash())
        if status == SUPERSEDED:
            self._record(ended, SUPERSEDED, [reason], {})
        return ended

    def _record(self, state: RolloutState, action: str, reasons: list[str], detail: dict) -> None:
        row = {
            "at": datetime.fromtimestamp(self.clock.now(), tz=UTC).isoformat(),
            "version": state.version,
            "experiment_id": state.experiment_id,
            "decision": action,
            "share": state.share,
            "status": state.status,
            "reasons": reasons,
            "users": detail.get("users", {}),
            "guardrails": detail.get("guardrails", []),
            "health": detail.get("health", {}),
        }
        pipe = self.r.pipeline()
        pipe.lpush(self.keys.rollout_decisions(), json.dumps(row, default=str))
        pipe.ltrim(self.keys.rollout_decisions(), 0, DECISIONS_KEPT - 1)
        pipe.hincrby(self.keys.rollout_decision_counts(), action, 1)
        pipe.execute()
