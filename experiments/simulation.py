"""Simulated experiments on the synthetic world: the demo's users answer real recommendation lists.

Each user in the allocation is served lists by their variant's recommender; clicks, completions and
skips are drawn from the same response model that generated the training history
(:func:`core.synthetic.click_given_affinity`), so a variant that knows users' tastes earns more clicks.

For interleaving at scale, :func:`team_draft_outcomes` lists every merged list a user can be served and
:func:`interleaved_clicks` draws the credited clicks of many requests at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.contracts.events import EVENT_SCHEMA, SIMULATED_SOURCE
from core.synthetic import SyntheticWorld, click_given_affinity, completion_given_affinity
from experiments.assignment import Assigner
from experiments.definition import Experiment
from experiments.interleaving import rounds, team_draft_by_coins

# The demo's own experiment (champion vs popularity): registered only with the synthetic source, never
# from the definitions folder a pipeline on a user's own data reads (a running 50/50 split there would
# serve a popularity list to half of their listeners)
DEMO_EXPERIMENT = Path(__file__).parent / "demo" / "demo-champion-vs-popularity.yaml"

# variant name -> function(user indices) -> (n_users, n) ranked track indices, -1 padded
ListProvider = Callable[[np.ndarray], np.ndarray]


def simulate(
    world: SyntheticWorld,
    experiment: Experiment,
    providers: dict[str, ListProvider],
    algorithms: dict[str, str],
    sessions: int = 4,
    k: int = 10,
    start: datetime | None = None,
    days: int = 7,
    seed: int = 0,
    users: np.ndarray | None = None,
) -> pd.DataFrame:
    """Events (EVENT_SCHEMA) of ``sessions`` recommendation sessions per allocated user over ``days``
    (among ``users``, world user indices; default every user)."""
    rng = np.random.default_rng(seed)
    start = start or (datetime.now(UTC) - timedelta(days=days))
    assigner = Assigner(experiment)
    users = np.arange(world.n_users) if users is None else np.asarray(users)
    assigned = pd.Series([assigner.variant(u) for u in world.user_ids[users]], index=users).dropna()
    duration = world.tracks["duration_ms"].to_numpy()
    track_ids = world.tracks["track_id"].to_numpy()
    rows: list[tuple] = []
    for variant, users in assigned.groupby(assigned):
        users_idx = users.index.to_numpy()
        ranked = providers[variant](users_idx)  # (n, >= sessions * k)
        for row, u in enumerate(users_idx):
            listed = ranked[row, : sessions * k]
            z = world.pair_affinity(np.full(len(listed), u), np.maximum(listed, 0))  # the listed tracks only
            for s in range(sessions):
                on = listed[s * k : (s + 1) * k] >= 0
                slate, slate_z = listed[s * k : (s + 1) * k][on], z[s * k : (s + 1) * k][on]
                if not len(slate):
                    continue
                ts = start + timedelta(seconds=float(rng.uniform(0, days * 86_400)))
                request_id = f"sim-{experiment.id}-{u}-{s}"
                clicks = rng.random(len(slate)) < click_given_affinity(slate_z)
                for pos, t in enumerate(slate):
                    rows.append((u, t, "recommendation_shown", ts, None, variant, pos, request_id))
                    if not clicks[pos]:
                        continue
                    when = ts + timedelta(seconds=5 + pos)
                    rows.append((u, t, "recommendation_clicked", when, None, variant, pos, request_id))
                    if rng.random() < completion_given_affinity(slate_z[pos]):
                        rows.append((u, t, "track_completed", when, int(duration[t]), variant, pos, request_id))
                    else:
                        rows.append(
                            (u, t, "track_skipped", when, int(rng.integers(3_000, 30_000)), variant, pos, request_id)
                        )
    frame = pd.DataFrame(
        rows, columns=["u", "t", "type", "timestamp", "ms_played", "variant", "position", "request_id"]
    )
    return pd.DataFrame(
        {
            "event_id": [f"sim-{experiment.id}-{i:09d}" for i in range(len(frame))],
            "user_id": world.user_ids[frame["u"].to_numpy(dtype=int)],
            "track_id": track_ids[frame["t"].to_numpy(dtype=int)],
            "type": frame["type"],
            "timestamp": pd.to_datetime(frame["timestamp"], utc=True),
            "ms_played": pd.array(frame["ms_played"], dtype="Int64"),
            "rating": pd.array([None] * len(frame), dtype="Float32"),
            "request_id": frame["request_id"],
            "algorithm": frame["variant"].map(algorithms),
            "model_version": None,
            "experiment_id": experiment.id,
            "variant": frame["variant"],
            "position": pd.array(frame["position"], dtype="Int32"),
            "source": SIMULATED_SOURCE,
        }
    ).reindex(columns=EVENT_SCHEMA.names)


def team_draft_outcomes(a_ranked: np.ndarray, b_ranked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every merged list team draft can serve each user, one per coin sequence (each equally likely),
    from two rankings per user (``(n_users, >= k)`` track indices, best first, -1 padded).

    Returns ``tracks`` (n_users, 2 ** rounds(k), k), -1 padded, and ``from_b`` of the same shape, True
    where ranker b contributed the track. The lists come from
    :func:`experiments.interleaving.team_draft_by_coins` itself, so a vectorised simulation that picks
    one outcome per request at random serves exactly what production would."""
    coins = list(itertools.product((True, False), repeat=rounds(k)))
    tracks = np.full((len(a_ranked), len(coins), k), -1, dtype=np.int64)
    from_b = np.zeros(tracks.shape, dtype=bool)
    for u, (a, b) in enumerate(zip(a_ranked, b_ranked)):
        a, b = [int(t) for t in a if t >= 0], [int(t) for t in b if t >= 0]
        for j, a_first in enumerate(coins):
            merged, teams = team_draft_by_coins(a, b, k, a_first)
            tracks[u, j, : len(merged)] = merged
            from_b[u, j, : len(merged)] = np.array(teams) == "b"
    return tracks, from_b


def interleaved_clicks(
    rng: np.random.Generator, click_prob: np.ndarray, from_b: np.ndarray, users: np.ndarray, sessions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Credited clicks (for a, for b) of each entry of ``users`` (indices into the first axis of
    ``click_prob`` and ``from_b``, both shaped like :func:`team_draft_outcomes`' output; probability 0
    where a list has no track) over ``sessions[i]`` requests, each served one of the user's merged
    lists at random and each track clicked independently with its probability."""
    owner = np.repeat(np.arange(len(users)), sessions)
    pool, outcome = users[owner], rng.integers(0, click_prob.shape[1], size=len(owner))
    clicked = rng.random((len(owner), click_prob.shape[2])) < click_prob[pool, outcome]
    for_b = from_b[pool, outcome]
    a = np.bincount(owner, weights=(clicked & ~for_b).sum(axis=1), minlength=len(users))
    b = np.bincount(owner, weights=(clicked & for_b).sum(axis=1), minlength=len(users))
    return a.astype(np.int64), b.astype(np.int64)
