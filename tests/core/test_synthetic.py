import numpy as np
import pandas as pd
import pytest

from core.contracts.events import EVENT_SCHEMA
from core.contracts.tracks import TRACK_SCHEMA
from core.synthetic import SyntheticWorld


def test_world_is_deterministic_and_in_contract_schemas():
    a = SyntheticWorld.generate(200, 30, seed=3)
    b = SyntheticWorld.generate(200, 30, seed=3)
    pd.testing.assert_frame_equal(a.tracks, b.tracks)
    assert list(a.tracks.columns) == TRACK_SCHEMA.names
    assert a.tracks["track_id"].str.fullmatch(r"[0-9A-Za-z]{22}").all()
    events = a.events(3000, days=4)
    assert list(events.columns) == EVENT_SCHEMA.names
    pd.testing.assert_frame_equal(events, b.events(3000, days=4))
    assert abs(len(events) - 3000) < 300
    assert events["event_id"].is_unique
    assert set(events["type"]) >= {"recommendation_shown", "track_completed", "track_skipped"}


def test_listening_follows_taste():
    world = SyntheticWorld.generate(400, 60, seed=5)
    events = world.events(12_000, days=3)
    index = {t: i for i, t in enumerate(world.tracks["track_id"])}
    users = {u: i for i, u in enumerate(world.user_ids)}
    streams = events[events["type"].isin(["track_completed", "track_skipped"])]
    aff = np.array(
        [
            world.affinity(np.array([users[u]]), np.array([index[t]]))[0, 0]
            for u, t in zip(streams["user_id"], streams["track_id"])
        ]
    )
    completed = (streams["type"] == "track_completed").to_numpy()
    # users finish tracks they like and skip ones they do not
    assert aff[completed].mean() > aff[~completed].mean() + 0.2
    # and they listen to tracks they like far more than to random ones (affinity is ~N(0,1) per user)
    assert aff.mean() > 1.0


def _dense_affinity(world: SyntheticWorld, users: np.ndarray) -> np.ndarray:
    """The formula the generator used before it stopped building users x tracks matrices (commit
    f1fe4a5): every track scored, standardised over the catalog, favourite artists' bonus added."""
    genre = world.user_genre_taste[users][:, world.track_genre]
    diff = world.user_sound[users][:, None, :] - world.track_sound[None, :, :]
    raw = 0.45 * genre + 0.55 * -(diff**2).sum(axis=2) / 0.08 + 0.6 * world.track_appeal[None, :]
    z = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-9)
    return z + 1.5 * np.array([np.isin(world.track_artist, world.user_artists[u]) for u in users])


def test_affinity_is_the_dense_formula_for_every_track_and_pair():
    world = SyntheticWorld.generate(600, 40, seed=11)
    users = np.arange(world.n_users)
    reference = _dense_affinity(world, users)
    np.testing.assert_allclose(world.affinity(users), reference, atol=1e-6)
    # a subset of tracks is standardised over the catalog, not over the subset
    some = np.array([5, 17, 400])
    np.testing.assert_allclose(world.affinity(users[:3], some), reference[:3][:, some], atol=1e-6)
    rng = np.random.default_rng(0)
    u, t = rng.integers(0, world.n_users, 2000), rng.integers(0, world.n_tracks, 2000)
    np.testing.assert_allclose(world.pair_affinity(u, t), reference[u, t], atol=1e-6)
    assert (reference.max(axis=1) > 2.0).all()  # the favourite bonus is in: a real test of it


def test_listens_follow_the_softmax_of_affinity():
    """The rejection sampler draws exactly from p_u(t) ∝ exp(β affinity(u, t)), as the old per-user
    ``rng.choice(n_tracks, p=softmax)`` did: a chi-square test per user against the dense probabilities."""
    from scipy.stats import chisquare

    world = SyntheticWorld.generate(300, 4, seed=2)
    counts = np.full(world.n_users, 20_000)
    tracks, z = world.listens(np.random.default_rng(1), counts)
    reference = _dense_affinity(world, np.arange(world.n_users))
    owner = np.repeat(np.arange(world.n_users), counts)
    np.testing.assert_allclose(z, reference[owner, tracks], atol=1e-6)
    for u in range(world.n_users):
        p = np.exp(world.listen_sharpness * (reference[u] - reference[u].max()))
        expected = counts[u] * p / p.sum()
        observed = np.bincount(tracks[owner == u], minlength=world.n_tracks)
        common = expected >= 5  # rare tracks pooled into one cell
        f_obs = np.r_[observed[common], observed[~common].sum()]
        f_exp = np.r_[expected[common], expected[~common].sum()]
        assert chisquare(f_obs, f_exp).pvalue > 1e-3, f"user {u}"
        # and not only any concentrated distribution: uniform listening would fail the same test
        assert chisquare(np.full(len(f_obs), counts[u] / len(f_obs)), f_exp).pvalue < 1e-6


def test_favourite_artists_are_drawn_like_choice_without_replacement():
    from core.synthetic import _favourite_artists

    n = 8_000
    rng = np.random.default_rng(4)
    artist_genre = rng.integers(0, 5, size=25)
    taste = np.tile(rng.dirichlet(np.full(5, 0.5)), (n, 1))
    fast = _favourite_artists(np.random.default_rng(5), taste, artist_genre)
    pull = np.exp(3.0 * taste[0, artist_genre])
    slow_rng = np.random.default_rng(6)
    slow = [
        slow_rng.choice(25, size=min(25, 3 + slow_rng.poisson(6)), replace=False, p=pull / pull.sum()) for _ in range(n)
    ]
    assert all(len(set(a)) == len(a) for a in fast)
    share = lambda lists: np.bincount(np.concatenate(lists), minlength=25) / n  # noqa: E731
    both = (share(fast) + share(slow)) / 2
    # inclusion frequency of each artist agrees within 4.5 standard errors of the difference
    assert (np.abs(share(fast) - share(slow)) < 4.5 * np.sqrt(2 * both * (1 - both) / n) + 1e-9).all()
    assert abs(np.mean([len(a) for a in fast]) - np.mean([len(a) for a in slow])) < 0.1


def test_history_responds_to_affinity_as_the_response_model_says():
    from core.synthetic import click_given_affinity, completion_given_affinity

    world = SyntheticWorld.generate(2000, 300, seed=9)
    events = world.events(60_000, days=5)
    budget = np.maximum(3, np.round(60_000 * world.user_activity / world.user_activity.sum())).astype(int)
    per_user = events["user_id"].value_counts().reindex(world.user_ids, fill_value=0).to_numpy()
    np.testing.assert_array_equal(per_user, budget)  # every user fills their budget exactly
    users = pd.Index(world.user_ids).get_indexer(events["user_id"])
    tracks = pd.Index(world.tracks["track_id"]).get_indexer(events["track_id"])
    z = world.pair_affinity(users, tracks)
    kind = events["type"].to_numpy()
    streams = np.isin(kind, ["track_completed", "track_skipped", "play"])
    p_done = completion_given_affinity(z[streams])
    done = kind[streams] == "track_completed"
    assert abs(done.mean() - p_done.mean()) < 4 * np.sqrt(p_done.mean() * (1 - p_done.mean()) / streams.sum())
    skipped = kind[streams] == "track_skipped"
    assert abs(skipped.mean() - (0.7 * (1 - p_done)).mean()) < 0.01
    shown = kind == "recommendation_shown"
    p_click = click_given_affinity(z[shown]).mean()
    clicked = (kind == "recommendation_clicked").sum() / shown.sum()
    assert abs(clicked - p_click) < 4 * np.sqrt(p_click * (1 - p_click) / shown.sum()) + 0.002
    assert (z[kind == "like"] > 1.0).all()
    # slates come ten distinct tracks at a time, one instant each
    slates = events[shown].groupby("request_id")
    assert (slates["track_id"].nunique() == 10).all() and (slates["timestamp"].nunique() == 1).all()


def test_the_world_is_a_pure_function_of_the_seed():
    a, b = SyntheticWorld.generate(500, 50, seed=21), SyntheticWorld.generate(500, 50, seed=21)
    assert all((x == y).all() for x, y in zip(a.user_artists, b.user_artists))
    first = a.events(4000, days=2)
    a.listens(np.random.default_rng(0), np.full(a.n_users, 10))  # the cached sampler keeps no state
    pd.testing.assert_frame_equal(first, a.events(4000, days=2))
    other = SyntheticWorld.generate(500, 50, seed=22)
    assert not a.tracks["track_id"].equals(other.tracks["track_id"])


def test_listens_of_chosen_users_follow_those_users_tastes():
    """Regression: a user whose organic listens ran out was refilled with listens drawn for user 0, 1,
    ... (``listens`` took the counts as those of the first users), so ~0.2% of streams carried another
    user's taste and affinity."""
    world = SyntheticWorld.generate(300, 8, seed=2)
    tracks, z = world.listens(np.random.default_rng(0), np.array([50, 70]), users=np.array([6, 3]))
    owner = np.repeat([6, 3], [50, 70])
    np.testing.assert_allclose(z, world.pair_affinity(owner, tracks), atol=1e-9)
    with pytest.raises(ValueError, match="2 counts for 1 users"):
        world.listens(np.random.default_rng(0), np.array([1, 2]), users=np.array([0]))
