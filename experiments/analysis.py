"""The analysis of one experiment from its events: what a skeptical reviewer checks, in order.

1. **Sample ratio**: users per variant against the configured weights (chi-square, flagged at
   p < 0.001). A mismatch means assignment or logging is broken: no verdict can be trusted.
2. **Guardrails** (skip rate, ...): one-sided tests for harm; a breach stops a ship.
3. **Primary metric**, per treatment against the control: delta-method test on per-user sums, CUPED
   with each user's pre-experiment activity when the events include any, judged by a group-sequential
   design over the daily looks so far (so looking every day does not inflate false positives), Holm-
   adjusted across treatments. Secondary metrics are reported with Holm-adjusted p-values.
4. **Power**: the smallest relative lift the current sample can detect, and the sample a 5% lift needs.
5. **Ranking quality** of what each variant served (NDCG, precision, hit rate, MRR at 10 with clicks as
   relevance), per complete served list and averaged over lists (:mod:`experiments.ranking_quality`).
   A list with a lost exposure (a gap in its positions) or a track shown twice is left out of it,
   counted and named in ``incomplete_lists`` and the caveats; it never stops the verdict, which reads
   per-user sums, not lists.

An interleaving experiment (``design: interleaving``) is analysed by
:func:`experiments.interleaving_analysis.analyse_interleaving` instead: :func:`analyse` dispatches.

Only the experiment's events dated within [start, end) count (an open end when the date is None);
the result says how many were left out. Events outside the experiment stay: they are the history CUPED
reads. The primary metric's daily series (:mod:`experiments.daily`) gives the looks of the sequential
design and the report's charts.

Verdict: ``don't ship`` (sample ratio mismatch, a breached guardrail, or a significant loss on the
primary metric), ``ship`` (a significant gain with enough users), else ``keep running``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from core.contracts.events import SIMULATED_SOURCE
from experiments.cuped import cuped_ratio_test
from experiments.daily import daily_series, earlier_looks
from experiments.definition import Experiment
from experiments.guardrails import guardrail_verdict
from experiments.interleaving_analysis import analyse_interleaving
from experiments.metrics import LOWER_IS_BETTER, RATIO_METRICS, untargeted_clicks, user_metrics, variant_summary
from experiments.multiple_testing import adjust_comparisons
from experiments.power import mde_for_mean, ratio_metric_sd, sample_size_for_mean
from experiments.ranking_quality import incomplete_caveat, ranking_quality, sort_lists
from experiments.sequential import group_sequential_comparison
from experiments.srm import sample_ratio_check
from experiments.stats import Comparison, ratio_test

SHIP, DONT_SHIP, KEEP_RUNNING = "ship", "don't ship", "keep running"


def _pre_covariates(events: pd.DataFrame, experiment: Experiment, users: pd.Index) -> dict[str, pd.Series] | None:
    """Per user and metric, the metric's numerator count before the user's first exposure in the
    experiment (fixed before assignment, so CUPED stays unbiased). None when no pre-period exists."""
    exposed = events[events["experiment_id"] == experiment.id]
    if exposed.empty:
        return None
    start = exposed.groupby("user_id")["timestamp"].min()
    before = events[events["experiment_id"] != experiment.id].merge(
        start.rename("start"), left_on="user_id", right_index=True
    )
    before = before[before["timestamp"] < before["start"]]
    if before.empty:
        return None
    pre = user_metrics(before.assign(experiment_id=experiment.id, variant="pre"), experiment.id).set_index("user_id")
    return {metric: pre[num].reindex(users).fillna(0.0) for metric, (num, _) in RATIO_METRICS.items()}


def events_in_dates(experiment: Experiment, events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The events the analysis counts and how many it left out: the experiment's own events dated before
    its start or on or after its end are dropped (``{"before_start": n, "after_end": n}``); every other
    event stays, since the pre-period history CUPED reads is dated before the start by design."""
    own = (events["experiment_id"] == experiment.id).to_numpy()
    when = pd.to_datetime(events["timestamp"], utc=True)
    before = own & (when < experiment.start).to_numpy() if experiment.start else np.zeros(len(events), dtype=bool)
    after = own & (when >= experiment.end).to_numpy() if experiment.end else np.zeros(len(events), dtype=bool)
    return events[~(before | after)], {"before_start": int(before.sum()), "after_end": int(after.sum())}


def compare_users(
    per_user: pd.DataFrame, pre: dict[str, pd.Series] | None, metric: str, control: str, treatment: str, alpha: float
) -> Comparison | None:
    """Treatment against control on ``metric`` from per-user sums (:func:`experiments.metrics.user_metrics`
    indexed by user id): CUPED when the pre-period covariate varies among the compared users, else the
    plain delta-method test; None with fewer than 2 users per variant, no denominator, or no variation
    at all (no clicks yet in either variant: there is nothing to test)."""
    c, t = per_user[per_user["variant"] == control], per_user[per_user["variant"] == treatment]
    num, den = RATIO_METRICS[metric]
    if len(c) < 2 or len(t) < 2 or c[den].sum() == 0 or t[den].sum() == 0:
        return None
    # a covariate constant within both variants explains nothing (CUPED's slope is undefined)
    if pre is not None and (pre[metric].loc[c.index].nunique() > 1 or pre[metric].loc[t.index].nunique() > 1):
        result = cuped_ratio_test(
            metric, c[num], c[den], pre[metric].loc[c.index], t[num], t[den], pre[metric].loc[t.index], alpha
        )
    else:
        result = ratio_test(metric, c[num], c[den], t[num], t[den], alpha)
    if not result.std_error > 0:
        return None
    return dataclasses.replace(result, variant=treatment)


def analyse(experiment: Experiment, events: pd.DataFrame) -> dict[str, Any]:
    """Everything the report shows, as plain data (JSON-serialisable once non-finite floats are
    nulled, see :func:`experiments.report.strict_summary`): verdict, reasons, sample ratio, guardrails,
    comparisons (raw and CUPED), power, ranking quality per variant, the dates and the events left out
    of them, the served lists left out of ranking quality (``incomplete_lists``, see
    :func:`experiments.ranking_quality.sort_lists`), and per treatment the daily series
    (:func:`experiments.daily.daily_series`). An interleaving experiment gets
    :func:`~experiments.interleaving_analysis.analyse_interleaving`'s result over the same dated events
    (with ``dates``), which raises :class:`~experiments.ranking_quality.ServedListError` when no shown
    track forms a usable merged list."""
    events, left_out = events_in_dates(experiment, events)
    dumped = experiment.model_dump(mode="json")
    dates = {"start": dumped["start"], "end": dumped["end"], "events_left_out": left_out}
    simulated = simulated_events(experiment, events)
    if experiment.design == "interleaving":
        result = analyse_interleaving(experiment, events)
        result["caveats"] = simulated_caveat(simulated) + result["caveats"]
        head = {key: result.pop(key) for key in ("experiment", "design")} | {"dates": dates}
        head |= {key: result.pop(key) for key in ("verdict", "reasons", "caveats")}
        return {**head, "simulated": simulated, **result}
    served, incomplete = sort_lists(events, experiment.id)
    per_user = user_metrics(events, experiment.id)
    summary = variant_summary(per_user)
    control = experiment.control.name
    users = {v.name: int(summary["users"].get(v.name, 0)) for v in experiment.variants}
    srm = sample_ratio_check(users, {v.name: v.weight for v in experiment.variants})
    indexed = per_user.set_index("user_id")
    pre = _pre_covariates(events, experiment, indexed.index.unique())

    def compare(metric: str, treatment: str, per_user: pd.DataFrame = indexed) -> Comparison | None:
        return compare_users(per_user, pre, metric, control, treatment, experiment.alpha)

    treatments = [v.name for v in experiment.variants[1:]]
    primary, secondary, guardrails, daily = [], [], [], []
    for treatment in treatments:
        planned = max(2 * experiment.min_sample_size, users[control] + users[treatment])
        series = daily_series(
            experiment,
            events,
            treatment,
            lambda so_far, t=treatment: compare(experiment.primary_metric, t, so_far),
            planned,
        )
        daily.append(series)
        main = compare(experiment.primary_metric, treatment)
        if main is not None:
            primary.append(group_sequential_comparison(main, planned, earlier_looks(series), experiment.alpha))
        secondary += [c for m in experiment.secondary_metrics if (c := compare(m, treatment)) is not None]
        for metric in experiment.guardrail_metrics:
            if (c := compare(metric, treatment)) is not None:
                guardrails.append(guardrail_verdict(c, metric in LOWER_IS_BETTER, experiment.alpha))
    primary = adjust_comparisons(primary, "holm")
    secondary = adjust_comparisons(secondary, "holm")

    verdict, reasons = _verdict(experiment, srm, users, primary, guardrails)
    return {
        "experiment": dumped,
        "design": "ab",
        "dates": dates,
        "verdict": verdict,
        "reasons": reasons,
        "caveats": simulated_caveat(simulated)
        + caveats(experiment, events)
        + incomplete_caveat(incomplete, served["request_id"].nunique() + _lists(incomplete), "ranking quality"),
        "simulated": simulated,
        "sample_ratio": srm.as_dict(),
        "variants": summary.reset_index().to_dict(orient="records"),
        "primary": [c.as_dict() for c in primary],
        "secondary": [c.as_dict() for c in secondary],
        "guardrails": [g.as_dict() for g in guardrails],
        "power": _power(experiment, indexed, control, users),
        "cuped": pre is not None,
        "ranking_quality": ranking_quality(served, [v.name for v in experiment.variants]),
        "incomplete_lists": incomplete,
        "daily": daily,
    }


def simulated_events(experiment: Experiment, events: pd.DataFrame) -> dict[str, Any]:
    """How many of the experiment's events an experiment simulation wrote (``source`` =
    :data:`~core.contracts.events.SIMULATED_SOURCE`): ``{"events": n, "of": total, "listeners":
    "real" | "simulated" | "partly simulated"}``."""
    own = (events["experiment_id"] == experiment.id).to_numpy()
    simulated = (
        own & events["source"].eq(SIMULATED_SOURCE).to_numpy()
        if "source" in events
        else np.zeros(len(events), dtype=bool)
    )
    n, total = int(simulated.sum()), int(own.sum())
    listeners = "real" if n == 0 else "simulated" if n == total else "partly simulated"
    return {"events": n, "of": total, "listeners": listeners}


def simulated_caveat(simulated: dict[str, Any]) -> list[str]:
    """The first caveat of a report computed on simulated listeners (none for real ones)."""
    if not simulated["events"]:
        return []
    return [
        f"listeners {'' if simulated['listeners'] == 'simulated' else 'partly '}simulated: {simulated['events']:,} of the experiment's "
        f"{simulated['of']:,} events were written by a simulation (synthetic users answering the served lists with the "
        "response model that generated their history), not by real listeners"
    ]


def _lists(incomplete: dict[str, dict]) -> int:
    return sum(found["lists"] for found in incomplete.values())


def caveats(experiment: Experiment, events: pd.DataFrame) -> list[str]:
    """What the verdict cannot see in the data: clicks that named no served list. (Every arm learns
    online: the feedback worker keeps the user vectors of every model version a running experiment
    serves, so an arm pinned to another version is not at a disadvantage.)"""
    n = untargeted_clicks(events, experiment.id)
    if not n or experiment.primary_metric != "ctr" and "ctr" not in experiment.secondary_metrics:
        return []
    return [
        f"{n:,} clicks of the experiment's users named no served list (no request token), so click-through leaves them "
        "out; clients that send the response's token with their feedback make it complete"
    ]


def _verdict(
    experiment: Experiment, srm, users: dict[str, int], primary: list[Comparison], guardrails
) -> tuple[str, list[str]]:
    if srm.mismatch:
        observed = ", ".join(f"{v} {n:,}" for v, n in srm.observed.items())
        return DONT_SHIP, [
            f"sample ratio mismatch (users {observed}; p = {srm.p_value:.2g}): assignment or logging is broken, no result can be trusted"
        ]
    breached = [g for g in guardrails if g.breached]
    if breached:
        return DONT_SHIP, [g.reason for g in breached]
    small = [v for v, n in users.items() if n < experiment.min_sample_size]
    if small:
        return KEEP_RUNNING, [f"{', '.join(small)} below the minimum sample of {experiment.min_sample_size:,} users"]
    if not primary:
        return KEEP_RUNNING, [f"no {experiment.primary_metric} data for a comparison yet"]
    lines, winners, losers = [], [], []
    for c in primary:
        p = c.adjusted_p_value if c.adjusted_p_value is not None else c.p_value
        better = (c.absolute_lift < 0) if c.metric in LOWER_IS_BETTER else (c.absolute_lift > 0)
        line = (
            f"{c.metric} {c.control:.4f} -> {c.treatment:.4f} in {c.variant} ({c.relative_lift:+.1%}, "
            f"95% CI {c.relative_ci[0]:+.1%} to {c.relative_ci[1]:+.1%}, sequential p = {p:.2g})"
        )
        lines.append(line)
        if p < experiment.alpha:
            (winners if better else losers).append(c)
    if losers:
        return DONT_SHIP, [f"significantly worse: {lines[primary.index(c)]}" for c in losers]
    if winners:
        held = [g.reason for g in guardrails]
        return SHIP, [f"significantly better: {lines[primary.index(c)]}" for c in winners] + held
    return KEEP_RUNNING, [f"not significant yet: {line}" for line in lines]


def _power(experiment: Experiment, indexed: pd.DataFrame, control: str, users: dict[str, int]) -> dict[str, Any]:
    c = indexed[indexed["variant"] == control]
    num, den = RATIO_METRICS[experiment.primary_metric]
    if len(c) < 2 or c[den].sum() == 0:
        return {}
    baseline, sd = ratio_metric_sd(c[num].to_numpy(), c[den].to_numpy())
    total = max(sum(users.values()), 4)
    weights = tuple(v.weight for v in experiment.variants)  # every arm: alpha is split across treatments
    usable = np.isfinite(sd) and sd > 0
    return {
        "metric": experiment.primary_metric,
        "baseline": baseline,
        "per_user_sd": sd,
        "mde_at_current_size": mde_for_mean(baseline, sd, total, experiment.alpha, 0.8, weights) if usable else None,
        "users_for_5pct_lift": sample_size_for_mean(baseline, sd, 0.05, experiment.alpha, 0.8, weights)
        if usable
        else None,
    }
