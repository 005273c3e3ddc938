"""Ranking quality of what each variant served, one served list at a time.

A served list is the ``recommendation_shown`` events sharing one ``request_id``; an event's
``position`` is 0-based (the API numbers its response ``position: i`` from 0, and so does the
simulation), so rank = position + 1 and a list of n tracks holds ranks 1..n. Relevance is binary: the
track was clicked (a ``recommendation_clicked`` event with the same request id and track).

Each metric is computed per list and averaged over every list a variant served; a list without a click
scores 0 (a variant is not flattered by leaving out the lists nobody clicked). Precision counts the
tracks a list actually holds in its top k (a list of 6 with 3 clicks has precision 0.5 at k = 10).
These are the figures Evidently computes with the request id as its "user" and
``no_feedback_users=True``; :func:`experiments.report.write_report` checks that they agree.

Only complete lists are scored (:func:`sort_lists`): one user and variant, ranks 1..n, one track per
rank, each track once. Real logs hold others (an exposure lost on the way leaves a gap in the ranks, a
client retry shows a track twice); those are left out, counted by reason with example request ids
(:data:`INCOMPLETE`), and named in the report, so one imperfect list never stops an analysis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.evaluation.metrics import hit_rate_at_k, ndcg_at_k, reciprocal_rank_at_k, shown_precision_at_k

RANKING_K = 10
METRICS = {"ndcg": ndcg_at_k, "precision": shown_precision_at_k, "hit_rate": hit_rate_at_k, "mrr": reciprocal_rank_at_k}
SERVED_COLUMNS = ["variant", "request_id", "user_id", "track_id", "rank", "clicked"]


class ServedListError(ValueError):
    """The served events do not form rankings (one track per rank, ranks 1..n, one list per request)."""


# why a served list is left out, in the order checked (a list is named by the first rule it breaks)
INCOMPLETE = {
    "no_request_id": "shown tracks with no request_id belong to no list (send the response's request_id with every event)",
    "unknown_variant": "a shown track names a variant that is not one of the experiment's",
    "shared_request_id": "the request id is shared by several users (or, in an A/B list, variants): each served list needs its own",
    "no_position": "a shown track has no usable position (a whole number >= 0, the 0-based rank)",
    "repeated_rank": "two tracks share one rank",
    "repeated_track": "a track is shown more than once in the list",
    "gap": "the ranks are not 1..n (an exposure was lost, or positions are 1-based)",
}
# the rules a ranking must pass to be scored (the A/B design): every rule
RANKING_RULES = tuple(INCOMPLETE)
EXAMPLES = 3  # request ids named per rule in summary.json


def sort_lists(
    events: pd.DataFrame,
    experiment_id: str,
    rules: tuple[str, ...] = RANKING_RULES,
    variants: list[str] | None = None,
    merged: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """The experiment's shown tracks split into complete lists and the rest.

    Returns (``served``, ``incomplete``): ``served`` one row per track of a list that breaks none of
    ``rules`` (SERVED_COLUMNS; ``rank`` is position + 1, or 0 for an unusable position of a merged list),
    sorted by variant, request and rank; ``incomplete`` per rule broken, ``{"lists": n, "shown": n,
    "examples": [request ids]}`` (a list counts under the first rule it breaks, in INCOMPLETE's order;
    ``no_request_id`` counts tracks, not lists). ``variants`` (names) enables ``unknown_variant``;
    ``merged`` lists (interleaving) hold several variants, one per contributed track."""
    ev = events[events["experiment_id"] == experiment_id]
    shown = ev[ev["type"] == "recommendation_shown"]
    position = pd.to_numeric(shown["position"], errors="coerce")
    served = shown[["variant", "request_id", "user_id", "track_id"]].assign(rank=position + 1)
    listed = served[served["request_id"].notna()]
    by_list = listed.groupby("request_id", sort=True)
    broken: dict[str, pd.Series] = {}
    if variants is not None and "unknown_variant" in rules:
        broken["unknown_variant"] = (~listed["variant"].isin(list(variants))).groupby(listed["request_id"]).any()
    if "shared_request_id" in rules:
        owners = by_list[["user_id"] if merged else ["user_id", "variant"]].nunique()
        broken["shared_request_id"] = (owners > 1).any(axis=1)
    rank = listed["rank"]
    if "no_position" in rules:
        broken["no_position"] = (rank.isna() | (rank < 1) | (rank % 1 != 0)).groupby(listed["request_id"]).any()
    for rule, columns in (("repeated_rank", ["request_id", "rank"]), ("repeated_track", ["request_id", "track_id"])):
        if rule in rules:
            broken[rule] = listed.duplicated(columns, keep=False).groupby(listed["request_id"]).any()
    if "gap" in rules:
        ranks = by_list["rank"].agg(["min", "max", "size"])
        broken["gap"] = (ranks["min"] != 1) | (ranks["max"] != ranks["size"])
    reason = pd.Series(None, index=pd.Index(sorted(listed["request_id"].unique()), name="request_id"), dtype=object)
    for rule in reversed([r for r in INCOMPLETE if r in broken]):  # the first rule broken names the list
        flagged = broken[rule].reindex(reason.index, fill_value=False).to_numpy(dtype=bool)
        reason[flagged] = rule
    incomplete: dict[str, dict] = {}
    no_id = int(served["request_id"].isna().sum())
    if no_id and "no_request_id" in rules:
        incomplete["no_request_id"] = {"lists": 0, "shown": no_id, "examples": []}
    tracks_per_list = by_list.size()
    for rule in INCOMPLETE:
        ids = reason.index[reason == rule]
        if len(ids):
            incomplete[rule] = {
                "lists": len(ids),
                "shown": int(tracks_per_list.loc[ids].sum()),
                "examples": [str(i) for i in ids[:EXAMPLES]],
            }
    complete = listed[listed["request_id"].map(reason).isna().to_numpy()]
    # without the position rules (merged lists), a track whose position is unusable gets rank 0
    usable = complete["rank"].where((complete["rank"] >= 1) & (complete["rank"] % 1 == 0), 0)
    complete = complete.assign(rank=usable.fillna(0).astype(np.int64))
    clicks = ev[ev["type"] == "recommendation_clicked"][["request_id", "track_id"]].drop_duplicates().assign(clicked=1)
    complete = complete.merge(clicks, on=["request_id", "track_id"], how="left")
    complete["clicked"] = complete["clicked"].fillna(0).astype(np.int64)
    return complete.sort_values(["variant", "request_id", "rank"], ignore_index=True)[SERVED_COLUMNS], incomplete


def served_lists(events: pd.DataFrame, experiment_id: str) -> pd.DataFrame:
    """One row per track of the experiment's complete served lists (SERVED_COLUMNS, see :func:`sort_lists`)."""
    return sort_lists(events, experiment_id)[0]


def incomplete_caveat(incomplete: dict[str, dict], total_lists: int, left_out_of: str) -> list[str]:
    """One line naming the lists left out of ``left_out_of`` and why (empty when none are)."""
    if not incomplete:
        return []
    parts = []
    for rule, found in incomplete.items():
        what = f"{found['shown']:,} shown tracks" if rule == "no_request_id" else f"{found['lists']:,} lists"
        examples = f" (e.g. {', '.join(repr(e) for e in found['examples'])})" if found["examples"] else ""
        parts.append(f"{what}{examples}: {INCOMPLETE[rule]}")
    lists = sum(f["lists"] for f in incomplete.values())
    return [f"{lists:,} of {total_lists:,} served lists left out of {left_out_of}; " + "; ".join(parts)]


def check_served_lists(served: pd.DataFrame) -> None:
    """Raise ServedListError unless every request id of ``served`` (SERVED_COLUMNS) is one complete list:
    one user and variant, ranks 1..n, one track per rank and each track once."""
    events = served.assign(experiment_id="x", type="recommendation_shown", position=served["rank"] - 1)
    _, incomplete = sort_lists(events, "x")
    if incomplete:
        rule, found = next(iter(incomplete.items()))
        example = f", e.g. request {found['examples'][0]!r}" if found["examples"] else ""
        raise ServedListError(
            f"{found['lists'] or found['shown']:,} served lists are not complete rankings: {INCOMPLETE[rule]}{example}; "
            "build them with served_tracks, which leaves such lists out"
        )


def ranking_k(served: pd.DataFrame, k: int = RANKING_K) -> int:
    """k, or less when some variant's longest list is shorter: every variant is measured at one k that
    all of them reach (Evidently cannot read a metric at a rank no list has)."""
    if served.empty:
        return k
    return int(min(k, served.groupby("variant")["rank"].max().min()))


def per_list_metrics(served: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per list (indexed by request id): variant, user and each metric at k (0 without a click)."""
    lists = served.groupby("request_id", sort=True)
    row, column = lists.ngroup().to_numpy(), served["rank"].to_numpy() - 1
    # a list's tracks are distinct (checked), so within the list a track is identified by its rank:
    # row = list, column = rank - 1, and the clicked cells are the relevant ones
    recommended = np.full((lists.ngroups, int(column.max()) + 1), -1)
    recommended[row, column] = column
    clicked = served["clicked"].to_numpy() > 0
    relevant = sp.csr_matrix((np.ones(clicked.sum()), (row[clicked], column[clicked])), shape=recommended.shape)
    out = lists[["variant", "user_id"]].first()
    for name, metric in METRICS.items():
        out[name] = np.nan_to_num(metric(recommended, relevant, k), nan=0.0)  # NaN = no click in the list
    return out


def ranking_quality(served: pd.DataFrame, variants: list[str], k: int = RANKING_K) -> dict[str, dict[str, Any]]:
    """Per variant: ``lists``, ``lists_clicked``, ``k`` and ``ndcg@k``, ``precision@k``, ``hit_rate@k``,
    ``mrr@k``, each the mean over the variant's lists (NaN when it served none)."""
    served = served[served["variant"].isin(variants)]
    k = ranking_k(served, k)
    per_list = per_list_metrics(served, k) if len(served) else pd.DataFrame(columns=["variant", *METRICS])
    quality = {}
    for variant in variants:
        own = per_list[per_list["variant"] == variant]
        quality[variant] = {"lists": len(own), "lists_clicked": int((own["hit_rate"] > 0).sum()), "k": k}
        quality[variant] |= {f"{name}@{k}": float(own[name].mean()) if len(own) else float("nan") for name in METRICS}
    return quality
