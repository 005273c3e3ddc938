"""A/B statistics by simulation: false positive rates with no true effect (fixed horizon, and sequential
under daily peeking), power at the planned sample size, and the sample ratio mismatch check; then
interleaving against an A/B test on the synthetic world: users needed for 80% power, A/A false positives.

Each simulated user sees ``shown`` recommendations (heavy-tailed activity) and clicks each with their own
probability (Beta-distributed taste, mean 10%), so impressions of one user are correlated: CTR is a ratio
metric analysed per user with the delta method. Users arrive in 14 equal daily cohorts and are split
50/50 at random; the reviewer looks once a day.

Interleaving vs A/B: the synthetic world's users (:class:`core.synthetic.SyntheticWorld`, clicks from
its response model) meet two rankers with a fixed quality gap: the treatment ranks by each user's true
taste, the control by 0.85 x taste + 0.15 x popularity (the tracks' broad appeal). A user makes
1 + Poisson(2 x activity) requests. The A/B test splits users 50/50 and compares per-user CTR with the
delta method (:func:`experiments.stats.compare_ratios`, as the analysis does); interleaving serves every
request a team-draft merge of both rankers and runs the sign test over users
(:func:`experiments.interleaving.preference`). For each design, power is simulated at several user
counts around its planned size and the users for 80% power interpolated (probit of power linear in
sqrt(users), as normal theory has it); the A/A false-positive rate is measured at that size.

    nice -n 10 .venv/bin/python -m bench.ab_simulations [--experiments 1000] [--power-runs 400] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.synthetic import SyntheticWorld, click_given_affinity
from experiments.interleaving import preference, users_for_sign_test
from experiments.power import power_for_mean, ratio_metric_sd, sample_size_for_mean
from experiments.sequential import always_valid_p_value, group_sequential_boundary, mixture_variance
from experiments.simulation import interleaved_clicks, team_draft_outcomes
from experiments.srm import sample_ratio_check
from experiments.stats import RatioMoments, compare_ratios

DAYS = 14
ALPHA = 0.05
Z_FIXED = stats.norm.isf(ALPHA / 2)  # a fixed-horizon two-sided test
LIFT = 0.05  # the relative CTR lift the experiment is planned to detect
CHUNK = 50  # experiments simulated at once (bounds memory at ~ CHUNK x users x 8 bytes per array)
WORLD_TRACKS, WORLD_USERS = 2_000, 10_000  # the population users are drawn from (with replacement)
K = 10  # tracks per served list
POPULARITY_WEIGHT = 0.15  # the control ranker's share of popularity; the treatment ranks by taste alone
POWER = 0.8
GRID = (0.5, 0.7, 1.0, 1.4, 2.0)  # user counts simulated for each power curve, times the planned size


def simulate_users(rng: np.random.Generator, shape: tuple[int, ...], lift: float = 0.0) -> dict[str, np.ndarray]:
    """Per-user shown/clicked counts, variant (0 control, 1 treatment) and arrival day."""
    activity = rng.gamma(1.5, 10.0, shape)
    shown = 1 + rng.poisson(activity)
    taste = rng.beta(2.0, 18.0, shape)
    variant = rng.integers(0, 2, shape)
    clicked = rng.binomial(shown, np.minimum(taste * np.where(variant == 1, 1 + lift, 1.0), 1.0))
    day = np.broadcast_to(np.arange(shape[-1]) * DAYS // shape[-1], shape)  # equal daily cohorts
    return {"shown": shown, "clicked": clicked, "variant": variant, "day": day}


def daily_moments(users: dict[str, np.ndarray]) -> dict[int, RatioMoments]:
    """Per variant, CTR moments of the users seen by each look: fields shaped (experiments, looks)."""
    n_exp = users["shown"].shape[0]
    cell = (np.arange(n_exp)[:, None] * 2 + users["variant"]) * DAYS + users["day"]
    num, den = users["clicked"].astype(np.float64), users["shown"].astype(np.float64)
    sums = [
        np.bincount(cell.ravel(), weights=w.ravel(), minlength=n_exp * 2 * DAYS).reshape(n_exp, 2, DAYS)
        for w in (np.ones_like(num), num, den, num * num, den * den, num * den)
    ]
    looks = [np.cumsum(s, axis=-1) for s in sums]
    return {v: RatioMoments(*(s[:, v, :] for s in looks)) for v in (0, 1)}


def run(n_experiments: int, users: int, lift: float, planned_sd: float, seed: int) -> dict[str, float]:
    """Share of simulated experiments each procedure declares significant at ALPHA."""
    rng = np.random.default_rng(seed)
    boundary = group_sequential_boundary(np.arange(1, DAYS + 1) / DAYS, ALPHA)
    # tuned before the experiment, from the planned variance of the difference (users split 50/50)
    tau2 = mixture_variance(planned_sd**2 * 4 / users, ALPHA)
    hits = {"fixed": 0, "naive_peeking": 0, "group_sequential": 0, "mixture_sprt": 0, "per_impression": 0, "srm": 0}
    for start in range(0, n_experiments, CHUNK):
        size = min(CHUNK, n_experiments - start)
        moments = daily_moments(simulate_users(rng, (size, users), lift))
        control, treatment = moments[0], moments[1]
        diff = treatment.ratio() - control.ratio()
        variance = control.variance() + treatment.variance()
        z = diff / np.sqrt(variance)
        hits["naive_peeking"] += int(np.sum((np.abs(z) >= Z_FIXED).any(axis=1)))
        hits["group_sequential"] += int(np.sum((np.abs(z) >= boundary).any(axis=1)))
        p_always = np.minimum.accumulate(always_valid_p_value(diff, variance, tau2), axis=1)
        hits["mixture_sprt"] += int(np.sum(p_always[:, -1] <= ALPHA))
        # the wrong unit: every impression as an independent Bernoulli trial (Wald z on the final day)
        rc, rt, shown_c, shown_t = (
            control.ratio()[:, -1],
            treatment.ratio()[:, -1],
            control.den[:, -1],
            treatment.den[:, -1],
        )
        z_impressions = (rt - rc) / np.sqrt(rc * (1 - rc) / shown_c + rt * (1 - rt) / shown_t)
        hits["per_impression"] += int(np.sum(np.abs(z_impressions) >= Z_FIXED))
        for e in range(size):  # the production tests on the final day, one experiment at a time
            final = [
                RatioMoments(*(float(f[e, -1]) for f in (m.n, m.num, m.den, m.num_sq, m.den_sq, m.num_den)))
                for m in (control, treatment)
            ]
            hits["fixed"] += compare_ratios("ctr", final[0], final[1], ALPHA).p_value < ALPHA
            srm = sample_ratio_check(
                {"control": int(final[0].n), "treatment": int(final[1].n)}, {"control": 0.5, "treatment": 0.5}
            )
            hits["srm"] += srm.mismatch
    return {name: count / n_experiments for name, count in hits.items()}


@dataclass(frozen=True)
class RankerPair:
    """The synthetic population's answers to the two rankers: per user, the click probability at each
    position of each ranker's top-K list, and of every team-draft merge of the two (and of the control
    with itself, the A/A case) with which ranker contributed each track."""

    control: np.ndarray  # (users, K)
    treatment: np.ndarray  # (users, K)
    interleaved: tuple[np.ndarray, np.ndarray]  # click_prob, from_b: (users, merges, K)
    self_interleaved: tuple[np.ndarray, np.ndarray]
    activity: np.ndarray  # (users,)
    shared: float  # tracks the two top-K lists have in common, on average

    def sessions(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        return 1 + rng.poisson(2.0 * self.activity[users])

    def expected_ctr(self, probs: np.ndarray) -> float:
        """CTR as the ratio of expected clicks to expected impressions over the population."""
        weight = 1 + 2.0 * self.activity  # expected requests per user; activity is drawn apart from taste
        return float((weight * probs.sum(axis=1)).sum() / (weight.sum() * K))


def ranker_pair(seed: int) -> RankerPair:
    """The two rankers' lists for every user of the world of ``seed``, built 1,000 users at a time."""
    world = SyntheticWorld.generate(WORLD_TRACKS, WORLD_USERS, seed)
    popularity = (world.track_appeal - world.track_appeal.mean()) / world.track_appeal.std()
    parts: dict[str, list] = {"control": [], "treatment": [], "interleaved": [], "self_interleaved": [], "shared": []}
    for start in range(0, world.n_users, 1_000):
        taste = world.affinity(np.arange(start, min(start + 1_000, world.n_users)))  # standardised per user
        treatment = np.argsort(-taste, axis=1)[:, :K]
        control = np.argsort(-((1 - POPULARITY_WEIGHT) * taste + POPULARITY_WEIGHT * popularity), axis=1)[:, :K]
        parts["control"].append(click_given_affinity(np.take_along_axis(taste, control, axis=1)))
        parts["treatment"].append(click_given_affinity(np.take_along_axis(taste, treatment, axis=1)))
        parts["interleaved"].append(_merges(taste, control, treatment))
        parts["self_interleaved"].append(_merges(taste, control, control))
        parts["shared"] += [len(np.intersect1d(c, t)) for c, t in zip(control, treatment)]
    merges = {
        name: tuple(np.concatenate(arrays) for arrays in zip(*parts[name]))
        for name in ("interleaved", "self_interleaved")
    }
    return RankerPair(
        np.concatenate(parts["control"]),
        np.concatenate(parts["treatment"]),
        merges["interleaved"],
        merges["self_interleaved"],
        world.user_activity,
        float(np.mean(parts["shared"])),
    )


def _merges(taste: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Click probability per position of every team-draft merge of rankings a and b (0 where a merge
    is shorter), and whether b contributed the track."""
    tracks, from_b = team_draft_outcomes(a, b, K)
    prob = click_given_affinity(np.take_along_axis(taste, np.maximum(tracks, 0).reshape(len(taste), -1), axis=1))
    return np.where(tracks >= 0, prob.reshape(tracks.shape), 0.0), from_b


def ab_significant(rng: np.random.Generator, pair: RankerPair, users: int, runs: int, treatment: np.ndarray) -> float:
    """Share of ``runs`` A/B tests of ``users`` users (50/50 at random; the treatment arm served
    ``treatment``'s lists) that the delta-method CTR test declares significant at ALPHA."""
    hits = 0
    for _ in range(runs):
        pool, arm = rng.integers(0, len(pair.activity), users), rng.integers(0, 2, users)
        sessions = pair.sessions(rng, pool)
        clicked = rng.binomial(sessions[:, None], np.where(arm[:, None] == 1, treatment[pool], pair.control[pool])).sum(
            axis=1
        )
        moments = [RatioMoments.of_users(clicked[arm == v], sessions[arm == v] * K) for v in (0, 1)]
        hits += compare_ratios("ctr", moments[0], moments[1], ALPHA).p_value < ALPHA
    return hits / runs


def interleaving_significant(
    rng: np.random.Generator, pair: RankerPair, users: int, runs: int, merges: tuple[np.ndarray, np.ndarray]
) -> float:
    """Share of ``runs`` interleaving experiments of ``users`` users, every request served a random
    team-draft merge from ``merges``, whose sign test over users is significant at ALPHA."""
    hits = 0
    for _ in range(runs):
        pool = rng.integers(0, len(pair.activity), users)
        clicks_a, clicks_b = interleaved_clicks(rng, *merges, pool, pair.sessions(rng, pool))
        hits += preference(clicks_a, clicks_b, ALPHA)["significant"]
    return hits / runs


def users_for_power(power_at: Callable[[int], float], planned: int) -> tuple[int, dict[int, float]]:
    """Users for POWER, from the power simulated at GRID multiples of ``planned``: probit(power) is
    fitted as a line in sqrt(users) (normal theory: power = Phi(effect * sqrt(users) / sd - z))."""
    curve = {n: power_at(n) for n in sorted({max(8, round(planned * m)) for m in GRID})}
    usable = [(n, p) for n, p in curve.items() if 0.02 < p < 0.995]
    if len(usable) < 2:
        raise RuntimeError(f"the power curve {curve} does not cross {POWER:.0%} in range: widen GRID")
    slope, intercept = np.polyfit(np.sqrt([n for n, _ in usable]), stats.norm.ppf([p for _, p in usable]), 1)
    return round(((stats.norm.ppf(POWER) - intercept) / slope) ** 2), curve


def compare_designs(seed: int, runs: int, a_a_runs: int) -> None:
    began = time.perf_counter()
    pair = ranker_pair(seed)
    ctr_c, ctr_t = pair.expected_ctr(pair.control), pair.expected_ctr(pair.treatment)
    gap = ctr_t / ctr_c - 1
    print(
        f"\nInterleaving vs A/B on the synthetic world ({WORLD_TRACKS:,} tracks, {WORLD_USERS:,} users drawn with replacement, world seed {seed})"
    )
    print(
        f"  control: top {K} by {1 - POPULARITY_WEIGHT:g} x taste + {POPULARITY_WEIGHT:g} x popularity; treatment: top {K} by taste"
    )
    print(
        f"  known gap: expected CTR {ctr_c:.4f} -> {ctr_t:.4f} ({gap:+.2%} relative); the lists share {pair.shared:.1f} of {K} tracks"
    )
    print(
        f"  requests per user 1 + Poisson(2 x activity), mean {float(np.mean(1 + 2 * pair.activity)):.1f}; "
        f"world built in {time.perf_counter() - began:.0f} s"
    )

    rng = np.random.default_rng(seed + 1)
    pilot = rng.integers(0, len(pair.activity), 200_000)
    sessions = pair.sessions(rng, pilot)
    ctr, sd = ratio_metric_sd(rng.binomial(sessions[:, None], pair.control[pilot]).sum(axis=1), sessions * K)
    planned_ab = sample_size_for_mean(ctr, sd, gap, alpha=ALPHA, power=POWER)
    clicks_a, clicks_b = interleaved_clicks(rng, *pair.interleaved, pilot, sessions)
    pilot_pref = preference(clicks_a, clicks_b, ALPHA)
    planned_il = users_for_sign_test(
        pilot_pref["share_b"], pilot_pref["users_with_preference"] / len(pilot), ALPHA, POWER
    )
    print(
        f"  pilot of 200,000 users: per-user CTR sd {sd:.4f}; interleaving: {pilot_pref['users_with_preference'] / len(pilot):.1%} "
        f"of users have a preference, {pilot_pref['share_b']:.1%} of them prefer the treatment"
    )

    # design -> (planned users, share significant given users, runs and whether both arms are the control)
    designs = {
        "A/B test (delta-method CTR)": (
            planned_ab,
            lambda n, r, a_a: ab_significant(rng, pair, n, r, pair.control if a_a else pair.treatment),
        ),
        "interleaving (sign test)": (
            planned_il,
            lambda n, r, a_a: interleaving_significant(
                rng, pair, n, r, pair.self_interleaved if a_a else pair.interleaved
            ),
        ),
    }
    needed = {}
    print(
        f"\n  {'design':<28} {'planned':>8}  power simulated at users ({runs} runs each){'':<22} {'80% power':>10}  "
        f"A/A false positives there ({a_a_runs:,} runs)"
    )
    for name, (planned, significant) in designs.items():
        needed[name], curve = users_for_power(lambda n, significant=significant: significant(n, runs, False), planned)
        a_a = significant(needed[name], a_a_runs, True)
        points = "  ".join(f"{n:,}: {p:.0%}" for n, p in curve.items())
        print(f"  {name:<28} {planned:>8,}  {points:<62} {needed[name]:>10,}  {_rate(a_a, a_a_runs)}")
    ab, il = needed.values()
    print(
        f"\n  interleaving needs {il / ab:.1%} of the A/B test's users (1/{ab / il:.0f}) for {POWER:.0%} power; "
        f"{time.perf_counter() - began:.0f} s"
    )


def _rate(share: float, n: int) -> str:
    return f"{share:6.1%} (± {np.sqrt(max(share * (1 - share), 1e-12) / n):.1%} s.e.)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument(
        "--power-runs", type=int, default=400, help="simulated experiments per point of each power curve"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, began = args.experiments, time.perf_counter()

    pilot = simulate_users(np.random.default_rng(args.seed + 100), (1, 200_000))
    ctr, sd = ratio_metric_sd(pilot["clicked"][0], pilot["shown"][0])
    users = sample_size_for_mean(ctr, sd, LIFT, alpha=ALPHA, power=0.8)
    promised = power_for_mean(ctr, sd, LIFT, users, alpha=ALPHA)
    print("Planning (pilot of 200,000 users, CTR per user by the delta method)")
    print(
        f"  baseline CTR {ctr:.4f}, per-user sd {sd:.4f}; {LIFT:.0%} relative lift at 80% power -> "
        f"{users:,} users ({users // 2:,} per variant), promised power {promised:.1%}"
    )

    a_a = run(n, users, 0.0, sd, args.seed)
    print(f"\nA/A: {n:,} experiments, no true effect, false positive rate at alpha {ALPHA} (target 3% to 7%)")
    print(f"  fixed horizon (delta method, day {DAYS})          {_rate(a_a['fixed'], n)}")
    print(f"  group sequential, {DAYS} daily looks (alpha*t^2)  {_rate(a_a['group_sequential'], n)}")
    print(f"  mixture SPRT (always valid), {DAYS} daily looks   {_rate(a_a['mixture_sprt'], n)}")
    print("  for contrast, what the above protect against:")
    print(f"    fixed-horizon test re-run at each of {DAYS} looks {_rate(a_a['naive_peeking'], n)}")
    print(f"    impressions taken as independent trials       {_rate(a_a['per_impression'], n)}")
    print(f"  SRM flagged (p < 0.001) in healthy 50/50 splits   {_rate(a_a['srm'], n)}")

    lifted = run(n, users, LIFT, sd, args.seed + 1)
    print(f"\nPower: {n:,} experiments with a true {LIFT:.0%} relative CTR lift at {users:,} users")
    print(f"  promised by the power calculation             {promised:6.1%}")
    print(f"  detected, fixed horizon                       {_rate(lifted['fixed'], n)}")
    print(f"  detected, group sequential ({DAYS} looks)         {_rate(lifted['group_sequential'], n)}")
    print(f"  detected, mixture SPRT ({DAYS} looks)             {_rate(lifted['mixture_sprt'], n)}")

    srm = sample_ratio_check({"control": 10_400, "treatment": 9_600}, {"control": 0.5, "treatment": 0.5})
    print("\nSample ratio mismatch: 50/50 experiment, 10,400 / 9,600 of 20,000 users")
    print(
        f"  chi-square {srm.chi_square:.1f}, p = {srm.p_value:.3g} -> {'FLAGGED' if srm.mismatch else 'not flagged'} (threshold 0.001)"
    )

    compare_designs(args.seed, args.power_runs, n)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
