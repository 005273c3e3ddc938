"""Deterministic, sticky assignment: salted hashes of the user id into 10,000 buckets.

Layers, as in Google's overlapping experiment infrastructure (Tang et al. 2010): a user's bucket in a
layer comes from the layer's salt, and each experiment of the layer owns a range of those buckets
(``layer_offset`` .. ``layer_offset + traffic_allocation``), so the experiments of one layer share its
traffic exclusively while experiments of different layers are assigned independently. Within an
experiment the variant comes from the experiment's own salt, so widening the allocation adds users
without moving anyone already in it to another variant.
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
        self._first = round(experiment.layer_offset * BUCKETS)
        self._end = round((experiment.layer_offset + experiment.traffic_allocation) * BUCKETS)
        self._layer_salt = f"layer:{experiment.layer}"
        edges, acc = [], 0.0
        for v in experiment.variants[:-1]:
            acc += v.weight
            edges.append(round(acc * BUCKETS))
        self._edges = edges
        self._names = [v.name for v in experiment.variants]

    def variant(self, user_id: str) -> str | None:
        """The user's variant name, or None when the user is outside the traffic allocation."""
        if not self._first <= bucket(self._layer_salt, user_id) < self._end:
            return None
        return self._names[bisect_right(self._edges, bucket(f"{self.experiment.id}:variant", user_id))]
