"""A/B statistics by simulation: false positive rates with no true effect (fixed horizon, and sequential
under daily peeking), power at the planned sample size, and the sample ratio mismatch check.

Each simulated user sees ``shown`` recommendations (heavy-tailed activity) and clicks each with their own
probability (Beta-distributed taste, mean 10%), so impressions of one user are correlated: CTR is a ratio
metric analysed per user with the delta method. Users arrive in 14 equal daily cohorts and are split
50/50 at random; the reviewer looks once a day.

    nice -n 10 .venv/bin/python bench/ab_simulations.py [--experiments 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from experiments.power import power_for_mean, ratio_metric_sd, sample_size_for_mean
from experiments.sequential import always_valid_p_value, group_sequential_boundary, mixture_variance
from experiments.srm import sample_ratio_check
from experiments.stats import RatioMoments, compare_ratios

DAYS = 14
ALPHA = 0.05
Z_FIXED = stats.norm.isf(ALPHA / 2)  # a fixed-horizon two-sided test
LIFT = 0.05  # the relative CTR lift the experiment is planned to detect
CHUNK = 50  # experiments simulated at once (bounds memory at ~ CHUNK x users x 8 bytes per array)


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
    sums = [np.bincount(cell.ravel(), weights=w.ravel(), minlength=n_exp * 2 * DAYS).reshape(n_exp, 2, DAYS)
            for w in (np.ones_like(num), num, den, num * num, den * den, num * den)]  # fmt: skip
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
        rc, rt, shown_c, shown_t = control.ratio()[:, -1], treatment.ratio()[:, -1], control.den[:, -1], treatment.den[:, -1]
        z_impressions = (rt - rc) / np.sqrt(rc * (1 - rc) / shown_c + rt * (1 - rt) / shown_t)
        hits["per_impression"] += int(np.sum(np.abs(z_impressions) >= Z_FIXED))
        for e in range(size):  # the production tests on the final day, one experiment at a time
            final = [RatioMoments(*(float(f[e, -1]) for f in (m.n, m.num, m.den, m.num_sq, m.den_sq, m.num_den)))
                     for m in (control, treatment)]  # fmt: skip
            hits["fixed"] += compare_ratios("ctr", final[0], final[1], ALPHA).p_value < ALPHA
            srm = sample_ratio_check({"control": int(final[0].n), "treatment": int(final[1].n)}, {"control": 0.5, "treatment": 0.5})
            hits["srm"] += srm.mismatch
    return {name: count / n_experiments for name, count in hits.items()}


def _rate(share: float, n: int) -> str:
    return f"{share:6.1%} (± {np.sqrt(max(share * (1 - share), 1e-12) / n):.1%} s.e.)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, began = args.experiments, time.perf_counter()

    pilot = simulate_users(np.random.default_rng(args.seed + 100), (1, 200_000))
    ctr, sd = ratio_metric_sd(pilot["clicked"][0], pilot["shown"][0])
    users = sample_size_for_mean(ctr, sd, LIFT, alpha=ALPHA, power=0.8)
    promised = power_for_mean(ctr, sd, LIFT, users, alpha=ALPHA)
    print("Planning (pilot of 200,000 users, CTR per user by the delta method)")
    print(f"  baseline CTR {ctr:.4f}, per-user sd {sd:.4f}; {LIFT:.0%} relative lift at 80% power -> "
          f"{users:,} users ({users // 2:,} per variant), promised power {promised:.1%}")  # fmt: skip

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
    print(f"  chi-square {srm.chi_square:.1f}, p = {srm.p_value:.3g} -> {'FLAGGED' if srm.mismatch else 'not flagged'} (threshold 0.001)")
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
