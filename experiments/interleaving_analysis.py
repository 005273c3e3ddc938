"""The analysis of an interleaving experiment (``design: interleaving``) from its events.

Each merged list is logged as one ``recommendation_shown`` event per track, sharing the list's
``request_id``, with ``variant`` the ranker that contributed the track (the control's name for team
"a", the treatment's for "b") and ``position`` its place. A click is a ``recommendation_clicked`` event
with the list's request id and the track. The click is credited to the ranker the server logged for
that track in that list; the click's own ``variant`` is client input and is never read. A click whose
track is not in the list it names, or whose user is not the list's user, is not credited and is counted
in ``clicks.not_matched``.

Per user, the credited clicks of each ranker are summed over the user's lists and compared by
:func:`experiments.interleaving.preference` (sign test over users, bootstrap interval on the share).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.definition import Experiment
from experiments.interleaving import preference
from experiments.ranking_quality import ServedListError

# the verdicts of experiments.analysis, spelled out rather than imported: analysis dispatches here
SHIP, DONT_SHIP, KEEP_RUNNING = "ship", "don't ship", "keep running"
LIST_COLUMNS = ["request_id", "user_id", "clicks_a", "clicks_b"]


def shown_tracks(experiment: Experiment, events: pd.DataFrame) -> pd.DataFrame:
    """The experiment's shown tracks (request_id, user_id, track_id, variant), checked to form merged
    lists: a request id each, one user per list, each track once per list, a variant of the experiment."""
    ev = events[(events["experiment_id"] == experiment.id) & (events["type"] == "recommendation_shown")]
    shown = ev[["request_id", "user_id", "track_id", "variant"]]
    names = [v.name for v in experiment.variants]
    if shown["request_id"].isna().any():
        raise ServedListError(f"{int(shown['request_id'].isna().sum()):,} shown tracks have no request_id, so no list to belong to; "
                              "log the merged list's request_id with every shown track")  # fmt: skip
    strangers = shown[~shown["variant"].isin(names)]
    if len(strangers):
        raise ServedListError(f"{len(strangers):,} shown tracks name variant {strangers['variant'].iloc[0]!r}, e.g. in request "
                              f"{strangers['request_id'].iloc[0]!r}; each shown track of an interleaved list names the ranker that "
                              f"contributed it: {' or '.join(names)}")  # fmt: skip
    owners = shown.groupby("request_id")["user_id"].nunique()
    if (owners > 1).any():
        raise ServedListError(f"{int((owners > 1).sum()):,} request ids are shared by several users, e.g. {owners[owners > 1].index[0]!r}: "
                              "each merged list needs its own request id")  # fmt: skip
    repeated = shown[shown.duplicated(["request_id", "track_id"], keep=False)]
    if len(repeated):
        raise ServedListError(f"request {repeated['request_id'].iloc[0]!r} shows track {repeated['track_id'].iloc[0]!r} more than once: "
                              "team draft merges each track once, so its team would be ambiguous")  # fmt: skip
    return shown


def credited_lists(experiment: Experiment, events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per merged list (LIST_COLUMNS: credited clicks for the control, a, and the treatment,
    b) and the number of clicks on the experiment's lists that matched no shown track of the list's user."""
    shown = shown_tracks(experiment, events)
    requests = shown.groupby("request_id", sort=True)["user_id"].first()
    ev = events[events["type"] == "recommendation_clicked"]
    ours = ev["request_id"].isin(requests.index) | (ev["experiment_id"] == experiment.id)
    clicks = ev.loc[ours, ["request_id", "track_id", "user_id"]].drop_duplicates()  # a track clicked twice in a list counts once
    matched = clicks.merge(shown, on=["request_id", "track_id", "user_id"], how="inner")
    is_b = (matched["variant"] == experiment.variants[1].name).to_numpy()
    per_list = pd.DataFrame({"request_id": matched["request_id"], "clicks_a": ~is_b, "clicks_b": is_b}).groupby("request_id").sum()
    lists = per_list.reindex(requests.index, fill_value=0).astype(np.int64)
    return lists.assign(user_id=requests).reset_index()[LIST_COLUMNS], len(clicks) - len(matched)


def analyse_interleaving(experiment: Experiment, events: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """What the report shows for an interleaving experiment, as plain data (no NaN: undefined figures
    are None with a reason): verdict, reasons, caveats, rankers (a: control, b: treatment), lists,
    impressions won by each ranker, credited clicks, and the per-user ``preference`` with its sign test
    and bootstrap interval (``seed`` fixes the resamples). Raises ServedListError when the shown events
    do not form merged lists, ValueError for an experiment that is not an interleaving one."""
    if experiment.design != "interleaving":
        raise ValueError(f"experiment {experiment.id!r} has design {experiment.design!r}: use experiments.analysis.analyse")
    a, b = (v.name for v in experiment.variants)
    lists, not_matched = credited_lists(experiment, events)
    per_user = lists.groupby("user_id")[["clicks_a", "clicks_b"]].sum()
    result = preference(per_user["clicks_a"], per_user["clicks_b"], experiment.alpha, seed=seed, names=(a, b))
    won_a, won_b = int((lists["clicks_a"] > lists["clicks_b"]).sum()), int((lists["clicks_b"] > lists["clicks_a"]).sum())
    verdict, reasons = _verdict(experiment, len(lists), result)
    return {
        "experiment": experiment.model_dump(mode="json"),
        "design": "interleaving",
        "verdict": verdict,
        "reasons": reasons,
        "caveats": caveats(experiment, not_matched),
        "rankers": {"a": a, "b": b},
        "lists": len(lists),
        "impressions": {"won": {a: won_a, b: won_b}, "tied": len(lists) - won_a - won_b,
                        "with_clicks": int(((lists["clicks_a"] + lists["clicks_b"]) > 0).sum())},  # fmt: skip
        "clicks": {"credited": {a: int(lists["clicks_a"].sum()), b: int(lists["clicks_b"].sum())}, "not_matched": not_matched},
        "preference": result,
    }


def caveats(experiment: Experiment, not_matched: int) -> list[str]:
    """What the verdict cannot see: interleaving measures which ranker's tracks users click when both
    are shown side by side, not what a whole list of one ranker does to listening, skips or return visits."""
    notes = [f"interleaving compares clicks on {experiment.variants[0].name}'s and {experiment.variants[1].name}'s tracks within "
             "the same lists; it does not measure listening time, skips or whole-list effects (diversity, order): "
             "confirm a winner with an A/B test on those before relying on it"]  # fmt: skip
    if not_matched:
        notes.append(f"{not_matched:,} clicks name a list but not a track its user was shown there: not credited "
                     "(clients must send the response's request_id and the clicked track)")  # fmt: skip
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
