"""The analysis of an interleaving experiment (``design: interleaving``) from its events.

Each merged list is logged as one ``recommendation_shown`` event per track, sharing the list's
``request_id``, with ``variant`` the ranker that contributed the track (the control's name for team
"a", the treatment's for "b") and ``position`` its place. A click is a ``recommendation_clicked`` event
with the list's request id and the track. The click is credited to the ranker the server logged for
that track in that list; the click's own ``variant`` is client input and is never read. A click whose
track is not in the list it names, or whose user is not the list's user, is not credited and is counted
in ``clicks.not_matched``. A list whose clicks cannot be credited (no request id, a ranker that is not
the experiment's, two users, a track shown twice) is left out, counted in ``incomplete_lists`` and named
in the caveats; the other lists still reach a verdict.

Per user, the credited clicks of each ranker are summed over the user's lists and compared by
:func:`experiments.interleaving.preference` (sign test over users, bootstrap interval on the share).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.definition import Experiment
from experiments.interleaving import preference
from experiments.ranking_quality import ServedListError, incomplete_caveat, sort_lists

# the verdicts of experiments.analysis, spelled out rather than imported: analysis dispatches here
SHIP, DONT_SHIP, KEEP_RUNNING = "ship", "don't ship", "keep running"
LIST_COLUMNS = ["request_id", "user_id", "clicks_a", "clicks_b"]


# what crediting a click needs of a merged list: its request id, one user, rankers of the experiment and
# each track once (so its team is known); positions are not needed, so a list with a lost exposure still
# credits the clicks on the tracks it logged
MERGED_LIST_RULES = ("no_request_id", "unknown_variant", "shared_request_id", "repeated_track")


def merged_lists(experiment: Experiment, events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The experiment's shown tracks in usable merged lists (:data:`~experiments.ranking_quality.SERVED_COLUMNS`,
    variant = the ranker that contributed the track) and the lists left out, by rule
    (:func:`experiments.ranking_quality.sort_lists` with MERGED_LIST_RULES). Raises ServedListError
    when tracks were shown but none is in a usable list: no click can be credited, so no preference."""
    names = [v.name for v in experiment.variants]
    shown, incomplete = sort_lists(events, experiment.id, MERGED_LIST_RULES, variants=names, merged=True)
    if shown.empty and incomplete:
        [line] = incomplete_caveat(incomplete, sum(f["lists"] for f in incomplete.values()), "the preference")
        raise ServedListError(
            f"no usable merged list: {line}. Each shown track of an interleaved list names the ranker that "
            f"contributed it ({' or '.join(names)}) and the list's request_id, each track once"
        )
    return shown, incomplete


def credited_lists(experiment: Experiment, events: pd.DataFrame) -> tuple[pd.DataFrame, int, dict[str, dict]]:
    """One row per usable merged list (LIST_COLUMNS: credited clicks for the control, a, and the
    treatment, b), the number of clicks on the experiment's lists that matched no shown track of the
    list's user, and the lists left out (:func:`merged_lists`)."""
    shown, incomplete = merged_lists(experiment, events)
    shown = shown[["request_id", "user_id", "track_id", "variant"]]
    requests = shown.groupby("request_id", sort=True)["user_id"].first()
    ev = events[events["type"] == "recommendation_clicked"]
    own_shown = events[(events["experiment_id"] == experiment.id) & (events["type"] == "recommendation_shown")]
    set_aside = ev["request_id"].isin(own_shown["request_id"]) & ~ev["request_id"].isin(
        requests.index
    )  # counted in `incomplete`
    ours = (ev["request_id"].isin(requests.index) | (ev["experiment_id"] == experiment.id)) & ~set_aside
    clicks = ev.loc[
        ours, ["request_id", "track_id", "user_id"]
    ].drop_duplicates()  # a track clicked twice in a list counts once
    matched = clicks.merge(shown, on=["request_id", "track_id", "user_id"], how="inner")
    is_b = (matched["variant"] == experiment.variants[1].name).to_numpy()
    per_list = (
        pd.DataFrame({"request_id": matched["request_id"], "clicks_a": ~is_b, "clicks_b": is_b})
        .groupby("request_id")
        .sum()
    )
    lists = per_list.reindex(requests.index, fill_value=0).astype(np.int64)
    return lists.assign(user_id=requests).reset_index()[LIST_COLUMNS], len(clicks) - len(matched), incomplete


def analyse_interleaving(experiment: Experiment, events: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """What the report shows for an interleaving experiment, as plain data (no NaN: undefined figures
    are None with a reason): verdict, reasons, caveats, rankers (a: control, b: treatment), lists,
    impressions won by each ranker, credited clicks, and the per-user ``preference`` with its sign test
    and bootstrap interval (``seed`` fixes the resamples). Raises ServedListError when the shown events
    do not form a single usable merged list (lists that break :data:`MERGED_LIST_RULES` are left out,
    counted in ``incomplete_lists`` and named in the caveats), ValueError for an experiment that is not
    an interleaving one. :func:`experiments.analysis.analyse` dispatches here and adds the dates."""
    if experiment.design != "interleaving":
        raise ValueError(
            f"experiment {experiment.id!r} has design {experiment.design!r}: use experiments.analysis.analyse"
        )
    a, b = (v.name for v in experiment.variants)
    lists, not_matched, incomplete = credited_lists(experiment, events)
    per_user = lists.groupby("user_id")[["clicks_a", "clicks_b"]].sum()
    result = preference(per_user["clicks_a"], per_user["clicks_b"], experiment.alpha, seed=seed, names=(a, b))
    won_a, won_b = (
        int((lists["clicks_a"] > lists["clicks_b"]).sum()),
        int((lists["clicks_b"] > lists["clicks_a"]).sum()),
    )
    verdict, reasons = _verdict(experiment, len(lists), result)
    return {
        "experiment": experiment.model_dump(mode="json"),
        "design": "interleaving",
        "verdict": verdict,
        "reasons": reasons,
        "caveats": caveats(experiment, not_matched)
        + incomplete_caveat(incomplete, len(lists) + sum(f["lists"] for f in incomplete.values()), "the preference"),
        "rankers": {"a": a, "b": b},
        "lists": len(lists),
        "impressions": {
            "won": {a: won_a, b: won_b},
            "tied": len(lists) - won_a - won_b,
            "with_clicks": int(((lists["clicks_a"] + lists["clicks_b"]) > 0).sum()),
        },
        "clicks": {
            "credited": {a: int(lists["clicks_a"].sum()), b: int(lists["clicks_b"].sum())},
            "not_matched": not_matched,
        },
        "preference": {key: value for key, value in result.items() if not (key == "reason" and value is None)},
        "incomplete_lists": incomplete,
    }


def caveats(experiment: Experiment, not_matched: int) -> list[str]:
    """What the verdict cannot see: interleaving measures which ranker's tracks users click when both
    are shown side by side, not what a whole list of one ranker does to listening, skips or return visits."""
    notes = [
        f"interleaving compares clicks on {experiment.variants[0].name}'s and {experiment.variants[1].name}'s tracks within "
        "the same lists; it does not measure listening time, skips or whole-list effects (diversity, order): "
        "confirm a winner with an A/B test on those before relying on it"
    ]
    if not_matched:
        notes.append(
            f"{not_matched:,} clicks name a list but not a track its user was shown there: not credited "
            "(clients must send the response's request_id and the clicked track)"
        )
    return notes


def _verdict(experiment: Experiment, lists: int, result: dict[str, Any]) -> tuple[str, list[str]]:
    treatment = experiment.variants[1].name
    if lists == 0:
        return KEEP_RUNNING, ["no interleaved lists served yet"]
    if result["users"] < experiment.min_sample_size:
        return KEEP_RUNNING, [f"{result['users']:,} users below the minimum sample of {experiment.min_sample_size:,}"]
    if result["p_value"] is None:
        return KEEP_RUNNING, [result["reason"]]
    if result["winner"] is None:
        return KEEP_RUNNING, [f"not significant yet: {result['summary']}"]
    if result["winner"] == treatment:
        return SHIP, [f"significantly preferred: {result['summary']}"]
    return DONT_SHIP, [f"significantly worse: {result['summary']}"]
