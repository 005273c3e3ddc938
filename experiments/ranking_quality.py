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


def served_lists(events: pd.DataFrame, experiment_id: str) -> pd.DataFrame:
    """One row per track shown in the experiment (SERVED_COLUMNS), validated by :func:`check_served_lists`."""
    ev = events[events["experiment_id"] == experiment_id]
    shown = ev[ev["type"] == "recommendation_shown"]
    position = pd.to_numeric(shown["position"], errors="coerce")
    _check_positions(shown, position)
    served = shown[["variant", "request_id", "user_id", "track_id"]].assign(rank=position.astype(np.int64) + 1)
    clicks = ev[ev["type"] == "recommendation_clicked"][["request_id", "track_id"]].drop_duplicates().assign(clicked=1)
    served = served.merge(clicks, on=["request_id", "track_id"], how="left")
    served["clicked"] = served["clicked"].fillna(0).astype(np.int64)
    check_served_lists(served)
    return served.sort_values(["variant", "request_id", "rank"], ignore_index=True)[SERVED_COLUMNS]


def _check_positions(shown: pd.DataFrame, position: pd.Series) -> None:
    bad = shown[position.isna() | (position < 0) | (position % 1 != 0)]
    if len(bad):
        raise ServedListError(f"{len(bad):,} recommendation_shown events have no usable position (a whole number >= 0, "
                              f"the 0-based rank in the list), e.g. request {bad['request_id'].iloc[0]!r}; "
                              "send context.position with every shown track")  # fmt: skip


def check_served_lists(served: pd.DataFrame) -> None:
    """Raise ServedListError unless every request id is one list of one user and variant whose ranks
    are 1..n, one track per rank and each track once (a click is matched by request and track)."""
    missing = served["request_id"].isna()
    if missing.any():
        raise ServedListError(f"{int(missing.sum()):,} shown tracks have no request_id, so no list to belong to; "
                              "send context.request_id (the recommendation response's request_id) with every event")  # fmt: skip
    owners = served.groupby("request_id")[["user_id", "variant"]].nunique()
    shared = owners[(owners > 1).any(axis=1)].index
    if len(shared):
        raise ServedListError(f"{len(shared):,} request ids are shared by several users or variants, e.g. {shared[0]!r}: "
                              "each served list needs its own request id")  # fmt: skip
    for columns, rule in ((["request_id", "rank"], "one track per rank"), (["request_id", "track_id"], "each track once per list")):
        repeated = served[served.duplicated(columns, keep=False)]
        if len(repeated):
            first = repeated.iloc[0]
            times = int((repeated[columns] == first[columns]).all(axis=1).sum())
            raise ServedListError(f"request {first['request_id']!r} breaks {rule}: {columns[1]} {first[columns[1]]!r} appears {times} "
                                  f"times in it ({repeated['request_id'].nunique():,} lists do); a served list is the tracks of "
                                  "one response, each at its own position")  # fmt: skip
    ranks = served.groupby("request_id")["rank"].agg(["min", "max", "size"])
    gaps = ranks[(ranks["min"] != 1) | (ranks["max"] != ranks["size"])]
    if len(gaps):
        first = gaps.iloc[0]
        raise ServedListError(f"request {gaps.index[0]!r} holds ranks {first['min']}..{first['max']} with {first['size']} tracks: "
                              f"a list's ranks must be 1..n without gaps (position 0..n-1); {len(gaps):,} lists do not")  # fmt: skip


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
