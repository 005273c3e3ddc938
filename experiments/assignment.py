"""Deterministic, sticky assignment: a salted hash of (experiment id, user id) into 10,000 buckets.

The allocation decision and the variant choice use different salts, so widening the allocation adds
users without moving anyone already in the experiment to another variant.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right

from experiments.definition import Experiment

BUCKETS = 10_000


def bucket(salt: str, user_id: str) -> int:
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Assigner:
    """Precomputed thresholds of one experiment; ``variant(user_id)`` is the hot path."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._allocated = round(experiment.traffic_allocation * BUCKETS)
        edges, acc = [], 0.0
        for v in experiment.variants[:-1]:
            acc += v.weight
            edges.append(round(acc * BUCKETS))
        self._edges = edges
        self._names = [v.name for v in experiment.variants]

    def variant(self, user_id: str) -> str | None:
        """The user's variant name, or None when the user is outside the traffic allocation."""
        if bucket(f"{self.experiment.id}:allocation", user_id) >= self._allocated:
            return None
        return self._names[bisect_right(self._edges, bucket(f"{self.experiment.id}:variant", user_id))]
