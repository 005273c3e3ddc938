"""Interleaving: two rankers answer the same request in one merged list, and each click credits the
ranker that contributed the clicked track.

Team draft (Radlinski, Kurup & Joachims 2008, "How does clickthrough data reflect retrieval quality?"):
in each round a fair coin decides which ranker ("team") picks first; each team in turn adds its
highest-ranked track not yet in the list. A track both rankers hold goes to whichever reaches it
first, and who goes first is random, so a user who clicks blind to the rankers credits both equally in
expectation (the A/A case: the sign test's null holds exactly). The list stops at ``k``
tracks, or as soon as either ranker has nothing new to add (the paper's rule: filling the tail from one
ranker alone would hand it uncontested credit), so the teams' counts differ by at most one.

Users, not clicks, are the unit of analysis: a user prefers the ranker that earned more of their credited
clicks, users without a preference (no clicks, or as many for each) are dropped, and a two-sided sign
test asks whether the treatment ("b") wins more than half of the users who have a preference. Clicks of
one user are correlated, so counting them as independent trials would overstate the evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

Team = Literal["a", "b"]
Outcome = Literal["a", "b", "tie"]
BOOTSTRAP_RESAMPLES = 2_000


def rounds(k: int) -> int:
    """Coin flips a merged list of at most ``k`` tracks needs: each round adds up to two tracks."""
    return (max(k, 0) + 1) // 2


def request_seed(experiment_id: str, request_id: str) -> int:
    """A seed for :func:`team_draft` fixed by the experiment and the request, so the merged list of a
    request can be rebuilt (and checked) from its ids alone."""
    digest = hashlib.blake2b(f"{experiment_id}:interleave:{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def team_draft(
    a: Sequence[Hashable], b: Sequence[Hashable], k: int, rng: np.random.Generator | int
) -> tuple[list, list[Team]]:
    """Merge rankings ``a`` and ``b`` (best first) into at most ``k`` tracks by team draft.

    ``rng`` is a numpy Generator or a seed (e.g. :func:`request_seed`); it draws the round coins, so
    the result is deterministic given it. Returns the merged list and, per position, the team ("a" or
    "b") that contributed the track."""
    coins = np.random.default_rng(rng).random(rounds(k)) < 0.5
    return team_draft_by_coins(a, b, k, coins.tolist())


def team_draft_by_coins(
    a: Sequence[Hashable], b: Sequence[Hashable], k: int, a_first: Sequence[bool]
) -> tuple[list, list[Team]]:
    """:func:`team_draft` given the coins: ``a_first[r]`` says whether ranker a picks first in round r
    (``rounds(k)`` coins are enough). Every coin sequence is equally likely, so enumerating them
    enumerates the merged lists a request can get, each with the same probability."""
    if len(a_first) < rounds(k):
        raise ValueError(f"a list of {k} tracks needs {rounds(k)} coins (got {len(a_first)})")
    merged: list = []
    teams: list[Team] = []
    seen: set = set()
    rankings = {"a": list(a), "b": list(b)}
    cursor = {"a": 0, "b": 0}

    def next_new(team: Team) -> Hashable | None:
        ranking = rankings[team]
        while cursor[team] < len(ranking) and ranking[cursor[team]] in seen:
            cursor[team] += 1
        return ranking[cursor[team]] if cursor[team] < len(ranking) else None

    for first in a_first[: rounds(k)]:
        for team in ("a", "b") if first else ("b", "a"):
            if len(merged) >= k or next_new("a") is None or next_new("b") is None:
                return merged, teams  # full, or a ranker has nothing new: the contest is over
            track = next_new(team)
            merged.append(track)
            teams.append(team)
            seen.add(track)
    return merged, teams


def credit(teams: Sequence[str], positions_clicked: Iterable[int]) -> tuple[int, int]:
    """(clicks for a, clicks for b) on one merged list whose positions (0-based) were clicked; a
    position clicked twice counts once."""
    positions = set(int(p) for p in positions_clicked)
    outside = sorted(p for p in positions if not 0 <= p < len(teams))
    if outside:
        raise ValueError(
            f"clicked positions {outside} are outside the list of {len(teams)} tracks (positions are 0-based)"
        )
    clicks_a = sum(teams[p] == "a" for p in positions)
    return clicks_a, len(positions) - clicks_a


def outcome(clicks_a: int, clicks_b: int) -> Outcome:
    """Which ranker won one impression (or one user): the one with more credited clicks, else a tie."""
    return "a" if clicks_a > clicks_b else "b" if clicks_b > clicks_a else "tie"


def sign_test(successes, trials):
    """Two-sided exact sign test (binomial test against 1/2) of ``successes`` in ``trials``: for a
    symmetric null, twice the smaller tail, capped at 1. Scalars or arrays (trials >= 1)."""
    successes, trials = np.asarray(successes), np.asarray(trials)
    if np.any(trials < 1) or np.any(successes < 0) or np.any(successes > trials):
        raise ValueError("the sign test needs 0 <= successes <= trials and trials >= 1")
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(successes, trials - successes), trials, 0.5))
    return float(p) if p.ndim == 0 else p


def bootstrap_share_interval(
    successes: int, trials: int, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the share ``successes / trials`` of users resampled with
    replacement. Resampling ``trials`` users of whom ``successes`` are 1 gives a Binomial(trials, share)
    count, so the resamples are drawn as that count directly (same distribution, no per-user arrays)."""
    if trials < 1:
        raise ValueError("a bootstrap interval needs at least one user")
    shares = np.random.default_rng(seed).binomial(trials, successes / trials, size=resamples) / trials
    lo, hi = np.quantile(shares, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def users_for_sign_test(share_b: float, preference_rate: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users an interleaving experiment needs for the sign test to detect that a share ``share_b`` of
    the users with a preference prefer b, when a share ``preference_rate`` of users has one (normal
    approximation to the binomial, two-sided at ``alpha``)."""
    if not 0 < preference_rate <= 1 or not 0 < share_b < 1 or share_b == 0.5:
        raise ValueError(
            f"need 0 < preference_rate <= 1 and 0 < share_b < 1, share_b != 0.5 (got {preference_rate}, {share_b})"
        )
    z_alpha, z_power = stats.norm.isf(alpha / 2), stats.norm.ppf(power)
    decided = ((0.5 * z_alpha + z_power * np.sqrt(share_b * (1 - share_b))) / abs(share_b - 0.5)) ** 2
    return int(np.ceil(decided / preference_rate))


def preference(
    clicks_a,
    clicks_b,
    alpha: float = 0.05,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    names: tuple[str, str] = ("a", "b"),
) -> dict[str, Any]:
    """Per-user preference from each user's credited clicks for ranker a (control) and b (treatment),
    one value per user in each array.

    Returns plain numbers: users, prefer_a, prefer_b, ties, users_with_preference; share_b (the share
    of users with a preference who prefer b), its percentile bootstrap interval share_b_ci at level
    1 - alpha, the sign test's p_value, significant, winner (a name from ``names``, or None) and a
    one-line summary. The winner is decided by the sign test alone (the interval is descriptive). When
    no user has a preference the figures are None and ``reason`` says why."""
    a, b = np.asarray(clicks_a), np.asarray(clicks_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"clicks_a and clicks_b need one value per user (shapes {a.shape} and {b.shape})")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("credited clicks cannot be negative")
    prefer_a, prefer_b = int(np.sum(a > b)), int(np.sum(b > a))
    decided, ties = prefer_a + prefer_b, int(a.size) - prefer_a - prefer_b
    result: dict[str, Any] = {
        "users": int(a.size),
        "prefer_a": prefer_a,
        "prefer_b": prefer_b,
        "ties": ties,
        "users_with_preference": decided,
        "share_b": None,
        "share_b_ci": None,
        "p_value": None,
        "alpha": alpha,
        "significant": False,
        "winner": None,
        "reason": None,
        "method": f"two-sided exact sign test over users; percentile bootstrap ({resamples:,} resamples, seed {seed})",
    }
    if decided == 0:
        reason = f"no user prefers either ranker yet ({a.size:,} users, none with more credited clicks for one of them)"
        return {**result, "reason": reason, "summary": reason}
    share, p = prefer_b / decided, sign_test(prefer_b, decided)
    lo, hi = bootstrap_share_interval(prefer_b, decided, 1 - alpha, resamples, seed)
    winner = None if p >= alpha or share == 0.5 else names[1] if share > 0.5 else names[0]
    summary = (
        f"{names[1]} preferred by {share:.1%} of {decided:,} users with a preference ({1 - alpha:.0%} CI {lo:.1%} to {hi:.1%}; "
        f"{prefer_a:,} prefer {names[0]}, {ties:,} tied), sign test p = {p:.2g}"
    )
    return {
        **result,
        "share_b": share,
        "share_b_ci": [lo, hi],
        "p_value": p,
        "significant": winner is not None,
        "winner": winner,
        "summary": summary,
    }
