"""The rollout's decision rules on simulated listeners whose answer is known: a harmful candidate is
rolled back, a non-inferior one steps up and is promoted, and A/A rollouts looked at after every drain
are rolled back no more than alpha of the time."""

import numpy as np
import pytest

from experiments.rollout_rules import (
    HOLD,
    LATENCY_BUCKETS_MS,
    PROMOTE,
    ROLLBACK,
    STEP_UP,
    RolloutPolicy,
    VersionHealth,
    decide,
    judge,
)
from experiments.stats import RatioMoments

POLICY = RolloutPolicy(ramp=(0.1, 0.5, 1.0), ctr_margin=0.05, min_users=200, alpha=0.05)
HEALTHY = VersionHealth(requests=1000, errors=0, buckets=(900, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def listeners(
    rng, users: int, ctr: float, skip: float, shape=(), shown_per_user: int = 30
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-user sums of ``users`` listeners (users along the last axis): tracks shown, clicks at ``ctr``,
    streams, skips at ``skip``, the rest completed."""
    size = (*shape, users)
    shown = rng.poisson(shown_per_user, size) + 1
    streams = rng.poisson(5, size) + 1
    skipped = rng.binomial(streams, skip)
    return {
        "ctr": (rng.binomial(shown, ctr), shown),
        "skip_rate": (skipped, streams),
        "completion_rate": (streams - skipped, streams),
    }


def moments(champion, candidate) -> dict[str, tuple[RatioMoments, RatioMoments]]:
    return {m: (RatioMoments.of_users(*champion[m]), RatioMoments.of_users(*candidate[m])) for m in champion}


def test_a_harmful_candidate_is_rolled_back_with_the_guardrail_named():
    rng = np.random.default_rng(1)
    champion = listeners(rng, 300, ctr=0.10, skip=0.30)
    candidate = listeners(rng, 60, ctr=0.04, skip=0.55)  # a canary's few listeners are enough for this harm
    decision = decide(moments(champion, candidate), HEALTHY, 0.1, POLICY)
    assert decision.action == ROLLBACK and decision.share == 0.0
    assert any("ctr breached" in r for r in decision.reasons)
    assert any("skip_rate breached" in r for r in decision.reasons)


def test_a_non_inferior_candidate_steps_up_then_is_promoted():
    rng = np.random.default_rng(2)
    champion = listeners(rng, 3000, ctr=0.10, skip=0.30)
    candidate = listeners(rng, 3000, ctr=0.105, skip=0.29)
    first = decide(moments(champion, candidate), HEALTHY, 0.1, POLICY)
    assert first.action == STEP_UP and first.share == 0.5, first.reasons
    # at 0.5 the candidate must gain min_users first, then the step past the last share below 1 is champion
    assert decide(moments(champion, candidate), HEALTHY, 0.5, POLICY, candidate_users_at_step=2900).action == HOLD
    last = decide(moments(champion, candidate), HEALTHY, 0.5, POLICY, candidate_users_at_step=2000)
    assert last.action == PROMOTE and last.share == 1.0, last.reasons


def test_a_candidate_worse_by_more_than_the_margin_never_steps_up():
    rng = np.random.default_rng(3)
    champion = listeners(rng, 3000, ctr=0.10, skip=0.30)
    candidate = listeners(rng, 3000, ctr=0.093, skip=0.30)  # 7% fewer clicks: beyond the 5% margin
    assert decide(moments(champion, candidate), HEALTHY, 0.1, POLICY).action in (HOLD, ROLLBACK)


def test_too_few_users_hold_even_when_everything_looks_fine():
    rng = np.random.default_rng(4)
    decision = decide(moments(listeners(rng, 150, 0.1, 0.3), listeners(rng, 150, 0.1, 0.3)), HEALTHY, 0.1, POLICY)
    assert decision.action == HOLD and "needs 200" in decision.reasons[0]


@pytest.mark.parametrize(
    "health, reason",
    [
        (VersionHealth(requests=1000, errors=20, buckets=(1000,) + (0,) * 10), "error rate 2.00%"),
        (VersionHealth(requests=1000, errors=0, buckets=(0,) * 6 + (1000,) + (0,) * 4), "P95 latency 300 ms"),
    ],
)
def test_the_candidate_past_the_adr_budgets_is_rolled_back(health, reason):
    rng = np.random.default_rng(5)
    same = moments(listeners(rng, 300, 0.1, 0.3), listeners(rng, 300, 0.1, 0.3))
    decision = decide(same, health, 0.1, POLICY)
    assert decision.action == ROLLBACK and reason in decision.reasons[0]
    # below the requests it takes to judge, the same figures are no evidence
    few = VersionHealth(requests=50, errors=health.errors // 20, buckets=tuple(b // 20 for b in health.buckets))
    assert decide(same, few, 0.1, POLICY).action != ROLLBACK


def test_p95_is_the_upper_bound_of_the_bucket_holding_it():
    assert len(LATENCY_BUCKETS_MS) == 10
    assert VersionHealth(100, 0, (94, 0, 0, 6) + (0,) * 7).p95_ms == 50.0
    assert VersionHealth(100, 0, (96, 4) + (0,) * 9).p95_ms == 5.0
    assert VersionHealth(100, 0, (0,) * 10 + (100,)).p95_ms == float("inf")
    assert VersionHealth().p95_ms is None


def test_a_a_rollouts_are_rolled_back_at_most_alpha_of_the_time_however_often_they_are_looked_at():
    """1,000 A/A rollouts, each looked at 20 times (after every drain) as users arrive up to 2,000 per arm:
    the share ever rolled back (any guardrail breached at any look) stays within alpha."""
    rng = np.random.default_rng(6)
    sims, users = 1000, 2000
    champion = listeners(rng, users, 0.1, 0.3, shape=(sims,), shown_per_user=8)
    candidate = listeners(rng, users, 0.1, 0.3, shape=(sims,), shown_per_user=8)
    looks = np.linspace(100, users, 20).astype(int) - 1

    def cumulative(arm, metric) -> RatioMoments:
        num, den = (np.asarray(a, dtype=np.float64) for a in arm[metric])
        return RatioMoments(
            n=np.broadcast_to(looks + 1.0, (sims, len(looks))),
            num=np.cumsum(num, axis=1)[:, looks],
            den=np.cumsum(den, axis=1)[:, looks],
            num_sq=np.cumsum(num * num, axis=1)[:, looks],
            den_sq=np.cumsum(den * den, axis=1)[:, looks],
            num_den=np.cumsum(num * den, axis=1)[:, looks],
        )

    ever = np.zeros(sims, dtype=bool)
    for metric in ("ctr", "skip_rate", "completion_rate"):
        breached, _, _ = judge(metric, cumulative(champion, metric), cumulative(candidate, metric), POLICY)
        ever |= breached.any(axis=1)
    assert ever.mean() <= POLICY.alpha
    # and the same test has power: a candidate 30% worse on click-through is caught in nearly every rollout
    worse = listeners(rng, users, 0.07, 0.3, shape=(sims,), shown_per_user=8)
    caught, _, _ = judge("ctr", cumulative(champion, "ctr"), cumulative(worse, "ctr"), POLICY)
    assert caught.any(axis=1).mean() > 0.95
