import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.assignment import BUCKETS, Assigner
from experiments.definition import Experiment


def _experiment(allocation=1.0, weights=(0.5, 0.5), exp_id="e1"):
    variants = [{"name": f"v{i}", "algorithm": "popularity", "weight": w} for i, w in enumerate(weights)]
    return Experiment.model_validate(
        {"id": exp_id, "name": "x", "variants": variants, "traffic_allocation": allocation}
    )


def test_assignment_is_sticky_and_deterministic():
    a, b = Assigner(_experiment()), Assigner(_experiment())
    users = [f"user{i}" for i in range(500)]
    assert [a.variant(u) for u in users] == [b.variant(u) for u in users]


def test_split_follows_weights_and_allocation():
    assigner = Assigner(_experiment(allocation=0.4, weights=(0.2, 0.3, 0.5)))
    got = [assigner.variant(f"user{i}") for i in range(40_000)]
    share_in = np.mean([g is not None for g in got])
    assert abs(share_in - 0.4) < 0.01
    inside = [g for g in got if g is not None]
    for name, weight in zip(("v0", "v1", "v2"), (0.2, 0.3, 0.5)):
        assert abs(inside.count(name) / len(inside) - weight) < 0.015


def test_widening_allocation_keeps_existing_users_in_place():
    narrow, wide = Assigner(_experiment(allocation=0.3)), Assigner(_experiment(allocation=0.8))
    for i in range(5_000):
        before = narrow.variant(f"u{i}")
        if before is not None:
            assert wide.variant(f"u{i}") == before


def test_experiments_are_independent():
    a, b = Assigner(_experiment(exp_id="one")), Assigner(_experiment(exp_id="two"))
    same = np.mean([a.variant(f"u{i}") == b.variant(f"u{i}") for i in range(10_000)])
    assert 0.45 < same < 0.55


@st.composite
def widened(draw):
    """An experiment of a layer (its offset, its variants' weights) and the same one with a wider allocation."""
    offset = draw(st.integers(0, 9_000)) / BUCKETS
    narrow = (
        draw(st.integers(500, BUCKETS - round(offset * BUCKETS))) / BUCKETS
    )  # 5% and up: some of the users are in it
    wide = draw(st.integers(round(narrow * BUCKETS), BUCKETS - round(offset * BUCKETS))) / BUCKETS
    parts = draw(st.lists(st.integers(1, 20), min_size=2, max_size=4))
    weights = [p / sum(parts) for p in parts[:-1]]
    weights.append(1 - sum(weights))
    spec = {
        "id": draw(st.sampled_from(["e1", "home-test", "x"])),
        "layer": draw(st.sampled_from(["default", "ranking"])),
        "layer_offset": offset,
        "variants": [{"name": f"v{i}", "algorithm": "popularity", "weight": w} for i, w in enumerate(weights)],
    }
    return spec, narrow, wide


@settings(max_examples=60, deadline=None)
@given(widened(), st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True))
def test_widening_a_split_moves_no_assigned_user_to_another_variant(case, users):
    """The property behind the module's promise, for any layer offset, weights and users: everyone in the
    narrow split is in the wide one, in the same variant; the wide one only adds users."""
    spec, narrow, wide = case
    before = Assigner(Experiment.model_validate({**spec, "name": "x", "traffic_allocation": narrow}))
    after = Assigner(Experiment.model_validate({**spec, "name": "x", "traffic_allocation": wide}))
    for user in users + [f"user{i}" for i in range(200)]:
        if (variant := before.variant(user)) is not None:
            assert after.variant(user) == variant, user
