"""The rollout's decision rules: pure maths on what each arm's listeners did and what the API answered
with the candidate. No I/O: :mod:`experiments.rollout` feeds them after every drain.

Three guardrails, each judged by the always-valid mixture sequential test of
:mod:`experiments.sequential` (its confidence sequence on the difference of the two arms' ratio
metrics, delta method on per-user sums), because the rollout looks after every drain with no planned
end: however often it looks, an A/A rollout is rolled back at most ``alpha`` of the time.

==================  =================  ==========================================================
metric              harmful when       rolled back when (sequence entirely past the margin)
==================  =================  ==========================================================
ctr                 it falls           harm beyond ``ctr_margin`` (relative) is certain
skip_rate           it rises           any harm is certain
completion_rate     it falls           any harm is certain
==================  =================  ==========================================================

``alpha`` is split evenly across the three (each sequence at ``alpha / 3``; union bound), so the chance
that any of them ever breaches in an A/A rollout is at most ``alpha``.

**Step up** (next share of the ramp; past the last share below 1.0, ``promote`` to champion) when no
guardrail is breached, click-through is shown non-inferior (the whole sequence above ``-ctr_margin``),
both arms have ``min_users`` users and the candidate gained ``min_users`` users since its last step.

**Roll back at once** on a breach, or when the candidate answered ``min_requests`` requests and its
5xx share exceeds ``max_error_rate`` or its P95 latency ``max_p95_ms`` (the ADR's budgets: 1%, 200 ms).

Otherwise **hold**.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from experiments.sequential import confidence_sequence_radius, mixture_variance
from experiments.stats import RatioMoments

if TYPE_CHECKING:
    from core.settings import Settings

HOLD, STEP_UP, PROMOTE, ROLLBACK = "hold", "step_up", "promote", "rollback"
DECISIONS = (HOLD, STEP_UP, PROMOTE, ROLLBACK)
# metric -> harmful direction (+1: harmful when it rises) and whether the CTR margin applies
GUARDRAILS: dict[str, tuple[float, bool]] = {
    "ctr": (-1.0, True),
    "skip_rate": (1.0, False),
    "completion_rate": (-1.0, False),
}
# the latency histogram's upper bounds (ms) the API counts each version's answers into
LATENCY_BUCKETS_MS = (5, 10, 20, 50, 100, 200, 300, 500, 1000, 2500)


@dataclass(frozen=True)
class RolloutPolicy:
    ramp: tuple[float, ...] = (0.1, 0.5, 1.0)
    ctr_margin: float = 0.05
    min_users: int = 200
    alpha: float = 0.05
    max_error_rate: float = 0.01
    max_p95_ms: float = 200.0
    min_requests: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutPolicy:
        return cls(
            ramp=settings.ramp,
            ctr_margin=settings.rollout_ctr_margin,
            min_users=settings.rollout_min_users,
            alpha=settings.rollout_alpha,
            max_error_rate=settings.rollout_max_error_rate,
            max_p95_ms=settings.rollout_max_p95_ms,
            min_requests=settings.rollout_min_requests,
        )

    @property
    def planned_users(self) -> int:
        """Users in both arms the mixture is tuned for (fixed for a rollout, as validity needs): ten
        times the minimum per arm."""
        return 10 * self.min_users

    @property
    def steps(self) -> int:
        """The ramp's shares below 1.0: each is judged on its own window of events."""
        return max(1, sum(1 for s in self.ramp if s < 1.0))

    def per_step(self) -> RolloutPolicy:
        """This policy at one step's share of ``alpha`` (split evenly across the steps; union bound)."""
        return replace(self, alpha=self.alpha / self.steps)

    def next_share(self, share: float) -> float:
        """The ramp's next share after ``share`` (1.0 means: promote)."""
        return next((s for s in self.ramp if s > share + 1e-9), 1.0)


@dataclass(frozen=True)
class GuardrailBounds:
    """One guardrail at one look: values per arm, harm (relative, + is worse) and its always-valid interval."""

    metric: str
    champion: float
    candidate: float
    harm: float
    harm_low: float
    harm_high: float
    margin: float
    breached: bool
    non_inferior: bool


@dataclass(frozen=True)
class VersionHealth:
    """What the API answered with one version: requests, 5xx errors, latency histogram counts per bucket
    of :data:`LATENCY_BUCKETS_MS` (the last entry: slower than the last bound)."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[int, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float | None:
        """The upper bound of the bucket holding the 95th percentile (inf past the last bound); None without data."""
        counts = np.asarray(self.buckets, dtype=np.float64)
        if not counts.sum():
            return None
        at = int(np.searchsorted(np.cumsum(counts), 0.95 * counts.sum()))
        return float(LATENCY_BUCKETS_MS[at]) if at < len(LATENCY_BUCKETS_MS) else float("inf")


@dataclass(frozen=True)
class RolloutDecision:
    action: str
    reasons: list[str]
    share: float  # the share after the decision (0 after a rollback, 1 after a promotion)
    users: dict[str, int]
    guardrails: list[GuardrailBounds] = field(default_factory=list)
    health: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def sequence_bounds(
    control: RatioMoments, treatment: RatioMoments, direction: float, planned_users: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Harm of ``treatment`` against ``control`` (``direction`` (t - c), absolute) with its always-valid
    confidence sequence at level ``alpha``: (control value, harm, low, high), elementwise over arrays of
    moments (one entry per simulated rollout and look). NaN where an arm has fewer than 2 users or no spread."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c, t = control.ratio(), treatment.ratio()
        variance = control.variance() + treatment.variance()
        users = control.n + treatment.n
        tau2 = mixture_variance(variance * users / planned_users, alpha)
        radius = confidence_sequence_radius(variance, tau2, alpha)
    usable = (control.n >= 2) & (treatment.n >= 2) & (variance > 0)
    harm = np.where(usable, direction * (t - c), np.nan)
    radius = np.where(usable, radius, np.nan)
    return c, harm, harm - radius, harm + radius


def judge(
    metric: str, control: RatioMoments, treatment: RatioMoments, policy: RolloutPolicy
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """(breached, non_inferior, (control value, harm, low, high)) of one guardrail, elementwise."""
    direction, with_margin = GUARDRAILS[metric]
    c, harm, low, high = sequence_bounds(
        control, treatment, direction, policy.planned_users, policy.alpha / len(GUARDRAILS)
    )
    tolerated = policy.ctr_margin * np.abs(c) if with_margin else 0.0
    return low > tolerated, high < policy.ctr_margin * np.abs(c), (c, harm, low, high)


def decide(
    moments: dict[str, tuple[RatioMoments, RatioMoments]],
    health: VersionHealth,
    share: float,
    policy: RolloutPolicy,
    candidate_users_at_step: int = 0,
) -> RolloutDecision:
    """The decision at one look. ``moments``: per guardrail metric, the (champion, candidate) arms' moments
    of per-user sums (a metric without data may be missing); ``health``: the candidate's answers;
    ``share``: its current share; ``candidate_users_at_step``: its arm's users when the share last moved."""
    any_moments = next(iter(moments.values()), None)
    users = {
        "champion": int(any_moments[0].n) if any_moments else 0,
        "candidate": int(any_moments[1].n) if any_moments else 0,
    }
    bounds, breaches, ctr_ok = [], [], False
    for metric in GUARDRAILS:
        if metric not in moments:
            continue
        breached, non_inferior, (c, harm, low, high) = judge(metric, *moments[metric], policy)
        scale = float(abs(c)) or 1.0
        margin = policy.ctr_margin if GUARDRAILS[metric][1] else 0.0
        g = GuardrailBounds(
            metric,
            float(c),
            float(moments[metric][1].ratio()) if moments[metric][1].den else float("nan"),
            float(harm) / scale,
            float(low) / scale,
            float(high) / scale,
            margin,
            bool(breached),
            bool(non_inferior),
        )
        bounds.append(g)
        if g.breached:
            breaches.append(
                f"guardrail {metric} breached: champion {g.champion:.4g}, candidate {g.candidate:.4g}, harm "
                f"{g.harm:+.1%} (always-valid interval {g.harm_low:+.1%} to {g.harm_high:+.1%}) beyond the "
                f"tolerated {margin:.0%}"
            )
        if metric == "ctr":
            ctr_ok = g.non_inferior
    p95 = health.p95_ms
    health_view = {
        "requests": health.requests,
        "errors": health.errors,
        "error_rate": health.error_rate,
        "p95_ms": p95,
        "max_error_rate": policy.max_error_rate,
        "max_p95_ms": policy.max_p95_ms,
    }
    if health.requests >= policy.min_requests:
        if health.error_rate > policy.max_error_rate:
            breaches.append(
                f"candidate error rate {health.error_rate:.2%} ({health.errors:,} of {health.requests:,} answers) "
                f"above the budget of {policy.max_error_rate:.0%}"
            )
        if p95 is not None and p95 > policy.max_p95_ms:
            breaches.append(f"candidate P95 latency {p95:g} ms above the budget of {policy.max_p95_ms:g} ms")
    if breaches:
        return RolloutDecision(ROLLBACK, breaches, 0.0, users, bounds, health_view)
    short = [
        f"{arm} arm has {n:,} users (needs {policy.min_users:,})" for arm, n in users.items() if n < policy.min_users
    ]
    gained = users["candidate"] - candidate_users_at_step
    if not short and gained < policy.min_users:
        short.append(f"candidate gained {gained:,} users at share {share:g} (needs {policy.min_users:,})")
    if short:
        return RolloutDecision(HOLD, short, share, users, bounds, health_view)
    ctr = next((g for g in bounds if g.metric == "ctr"), None)
    if not ctr_ok or ctr is None:
        why = (
            "no click-through data yet"
            if ctr is None
            else f"click-through not shown non-inferior yet: harm {ctr.harm:+.1%}, interval "
            f"{ctr.harm_low:+.1%} to {ctr.harm_high:+.1%} (margin {policy.ctr_margin:.0%})"
        )
        return RolloutDecision(HOLD, [why], share, users, bounds, health_view)
    held = f"click-through non-inferior: harm at most {ctr.harm_high:+.1%} (margin {policy.ctr_margin:.0%}), no guardrail breached"
    nxt = policy.next_share(share)
    if nxt >= 1.0:
        return RolloutDecision(PROMOTE, [f"{held}: champion"], 1.0, users, bounds, health_view)
    return RolloutDecision(STEP_UP, [f"{held}: share {share:g} -> {nxt:g}"], nxt, users, bounds, health_view)
