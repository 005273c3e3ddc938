"""A seeded synthetic music world that behaves like real listening.

The world (:class:`SyntheticWorld`) holds a catalog whose audio features are drawn per genre and per
artist, and users with latent tastes in genre and audio-feature space. A user's affinity for a track
combines genre preference, distance to the user's preferred sound and the track's appeal, so:

* listening follows taste (sampled from a softmax over affinity), with the popular tail real listeners show;
* completion, skip, like, rating and click probabilities rise with affinity;
* a model that learns tastes beats a popularity ranking, measurably.

The world is a pure function of ``seed`` (events use a separate stream of randomness), so an experiment
simulation can rebuild the same users and ask them how they like what a variant served.
Tables come out in the contract schemas (:data:`TRACK_SCHEMA`, :data:`EVENT_SCHEMA`).

Nothing here builds a users x tracks matrix unless asked for one (:meth:`SyntheticWorld.affinity`): a
user's affinity is standardised with the catalog's moments, listens are drawn by exact rejection
sampling and users' histories advance in lock step, so a million tracks, 100,000 users and five
million events take a couple of minutes and a few GB.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd

from core.contracts.events import EVENT_SCHEMA
from core.contracts.tracks import TRACK_SCHEMA

# genre -> (danceability, energy, acousticness, instrumentalness, valence, speechiness, tempo, loudness,
#           share of explicit tracks); audio features in Spotify's units.
GENRE_PROFILES: dict[str, tuple[float, ...]] = {
    "pop": (0.68, 0.66, 0.20, 0.02, 0.55, 0.07, 118, -6.0, 0.15),
    "rock": (0.50, 0.78, 0.10, 0.08, 0.48, 0.05, 128, -5.5, 0.08),
    "metal": (0.40, 0.93, 0.02, 0.20, 0.30, 0.09, 138, -4.5, 0.20),
    "hip hop": (0.78, 0.64, 0.15, 0.01, 0.50, 0.26, 98, -6.5, 0.65),
    "jazz": (0.55, 0.35, 0.70, 0.45, 0.50, 0.05, 110, -12.0, 0.01),
    "classical": (0.28, 0.15, 0.92, 0.85, 0.22, 0.04, 95, -21.0, 0.00),
    "electronic": (0.70, 0.82, 0.05, 0.60, 0.40, 0.06, 126, -5.0, 0.05),
    "country": (0.58, 0.60, 0.35, 0.01, 0.60, 0.04, 115, -7.0, 0.05),
    "r&b": (0.66, 0.52, 0.25, 0.02, 0.48, 0.11, 100, -7.5, 0.35),
    "folk": (0.48, 0.35, 0.78, 0.10, 0.42, 0.04, 108, -11.0, 0.02),
    "latin": (0.76, 0.74, 0.18, 0.02, 0.72, 0.09, 104, -5.5, 0.20),
    "reggae": (0.74, 0.58, 0.15, 0.05, 0.75, 0.12, 92, -8.0, 0.10),
    "blues": (0.52, 0.48, 0.50, 0.08, 0.52, 0.05, 105, -9.5, 0.02),
    "punk": (0.45, 0.92, 0.03, 0.03, 0.55, 0.08, 155, -4.8, 0.30),
    "soul": (0.60, 0.50, 0.40, 0.03, 0.62, 0.06, 102, -8.5, 0.03),
    "ambient": (0.30, 0.20, 0.75, 0.88, 0.15, 0.04, 90, -18.0, 0.00),
}
GENRES: tuple[str, ...] = tuple(GENRE_PROFILES)
_FEATURES = (
    "danceability",
    "energy",
    "acousticness",
    "instrumentalness",
    "valence",
    "speechiness",
    "tempo",
    "loudness",
)
_SYLLABLES = "ka lo mi ra ven tor sel an bri dus el fa gon hal iro jun kel lum nor ost pra qui ros sta tun ul vor wyn xa yel zor".split()
_WORDS = "night blue fire river heart city dream gold shadow summer rain light wild echo stone velvet electric silent neon ocean".split()
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def _spotify_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    chars = np.ascontiguousarray(_BASE62[rng.integers(0, 62, size=(int(n * 1.01) + 8, 22))])
    ids = np.unique(chars.view("<U22").ravel())  # each row of 22 characters read as one string
    rng.shuffle(ids)
    return ids[:n]


def _names(rng: np.random.Generator, n: int, parts: list[str], k: int) -> list[str]:
    picks = rng.integers(0, len(parts), size=(n, k))
    every = np.array([" ".join(words).title() for words in itertools.product(parts, repeat=k)])
    return every[np.ravel_multi_index(tuple(picks.T), (len(parts),) * k)].tolist()


def _segments(lengths: np.ndarray) -> np.ndarray:
    """Start of each of consecutive segments of ``lengths`` (one more entry: the total)."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for each pair, without a Python loop."""
    ends = _segments(lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64) - ends[:-1], lengths) + np.arange(ends[-1])


def _pick(rng: np.random.Generator, cumulative: np.ndarray) -> np.ndarray:
    """One index per row of ``cumulative`` (rows of non-decreasing weights' running sums), drawn in
    proportion to the weights; a zero-weight index is never drawn."""
    target = (1.0 - rng.random(len(cumulative))) * cumulative[:, -1]  # in (0, total]
    return np.minimum((cumulative < target[:, None]).sum(axis=1), cumulative.shape[1] - 1)


def _favourite_artists(rng: np.random.Generator, taste: np.ndarray, artist_genre: np.ndarray) -> list[np.ndarray]:
    """Per user 3 + Poisson(6) distinct artists (at most all of them), drawn one after another with
    probability proportional to exp(3 * the user's taste for the artist's genre): the distribution of
    ``rng.choice(n_artists, replace=False, p=...)`` per user, without a users x artists matrix (the
    weight depends on the genre alone, so a draw picks a genre, then an artist of it not yet picked)."""
    n_users, n_genres = taste.shape
    n_artists = len(artist_genre)
    sizes = np.minimum(n_artists, 3 + rng.poisson(6, size=n_users))
    per_genre = np.bincount(artist_genre, minlength=n_genres)
    left, pull = np.tile(per_genre.astype(np.float64), (n_users, 1)), np.exp(3.0 * taste)
    owners, genres = [], []
    for step in range(int(sizes.max(initial=0))):
        users = np.flatnonzero(sizes > step)
        genre = _pick(rng, np.cumsum(left[users] * pull[users], axis=1))
        left[users, genre] -= 1
        owners.append(users)
        genres.append(genre)
    owner, genre = np.concatenate(owners), np.concatenate(genres)
    by_genre, first = np.argsort(artist_genre, kind="stable"), _segments(per_genre)
    artist = np.empty(len(owner), dtype=np.int64)
    redo = np.arange(len(owner))
    while len(redo):  # uniform within the genre; an artist drawn twice for a user is drawn again
        g = genre[redo]
        artist[redo] = by_genre[
            first[g] + np.minimum((rng.random(len(redo)) * per_genre[g]).astype(np.int64), per_genre[g] - 1)
        ]
        _, kept = np.unique(owner * n_artists + artist, return_index=True)
        again = np.ones(len(owner), dtype=bool)
        again[kept] = False
        redo = np.flatnonzero(again)
    order = np.argsort(owner, kind="stable")
    return np.split(artist[order], np.cumsum(np.bincount(owner, minlength=n_users))[:-1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# How a user responds to a track of (standardised) affinity z. Shared by the history generator and by
# the experiment simulation, so simulated variants meet the same users the model was trained on.
def click_given_affinity(z: np.ndarray) -> np.ndarray:
    return _sigmoid(-3.6 + 1.6 * z)


def completion_given_affinity(z: np.ndarray) -> np.ndarray:
    return _sigmoid(-0.9 + 1.2 * z)


@dataclass
class SyntheticWorld:
    tracks: pd.DataFrame  # TRACK_SCHEMA columns
    track_genre: np.ndarray  # (n_tracks,) genre index
    track_sound: np.ndarray  # (n_tracks, n_features) audio features scaled to [0, 1]
    track_appeal: np.ndarray  # (n_tracks,) how broadly liked the track is
    track_artist: np.ndarray  # (n_tracks,) artist index
    user_ids: np.ndarray  # (n_users,) string ids
    user_genre_taste: np.ndarray  # (n_users, n_genres) log-preference per genre
    user_sound: np.ndarray  # (n_users, n_features) preferred sound, same scale as track_sound
    user_activity: np.ndarray  # (n_users,) relative activity
    user_artists: list[np.ndarray]  # per user, favourite artist indices (loyalty)
    seed: int
    # how strongly listening concentrates on a user's favourite tracks (softmax inverse temperature)
    listen_sharpness: float = 4.0

    @classmethod
    def generate(cls, n_tracks: int, n_users: int, seed: int = 7) -> SyntheticWorld:
        """Build the catalog and the users. Deterministic in (n_tracks, n_users, seed)."""
        rng = np.random.default_rng(seed)
        n_genres = len(GENRES)
        profiles = np.array([GENRE_PROFILES[g] for g in GENRES])

        # artists: a genre each (a few cross over into a second), a name, an appeal
        n_artists = max(5, n_tracks // 10)
        artist_genre = rng.integers(0, n_genres, size=n_artists)
        artist_second = np.where(rng.random(n_artists) < 0.25, rng.integers(0, n_genres, size=n_artists), -1)
        artist_names = np.array(_names(rng, n_artists, _SYLLABLES, 2))
        artist_ids = _spotify_ids(rng, n_artists)
        artist_appeal = rng.normal(0.0, 0.6, size=n_artists)
        artist_offset = rng.normal(0.0, 0.06, size=(n_artists, len(_FEATURES)))

        # tracks: artists with a heavy-tailed output
        artist_weight = rng.pareto(1.5, size=n_artists) + 0.2
        track_artist = rng.choice(n_artists, size=n_tracks, p=artist_weight / artist_weight.sum())
        genre = artist_genre[track_artist]
        base = profiles[genre, : len(_FEATURES)]
        scale = np.array([1, 1, 1, 1, 1, 1, 1 / 200, 1 / 60])  # tempo and loudness to ~[0, 1]
        shift = np.array([0, 0, 0, 0, 0, 0, 0, 60.0])
        sound = (base + shift) * scale + artist_offset[track_artist] + rng.normal(0.0, 0.08, size=base.shape)
        sound = np.clip(sound, 0.0, 1.0)
        features = sound / scale - shift
        features[:, 6] = np.clip(features[:, 6], 40, 220)
        features[:, 7] = np.clip(features[:, 7], -40, 0)

        appeal = artist_appeal[track_artist] + rng.normal(0.0, 0.7, size=n_tracks)
        explicit = rng.random(n_tracks) < profiles[genre, -1]
        second = artist_second[track_artist]
        genres = [[GENRES[g]] + ([GENRES[s]] if s >= 0 and s != g else []) for g, s in zip(genre, second)]

        tracks = pd.DataFrame(
            {
                "track_id": _spotify_ids(rng, n_tracks),
                "name": _names(rng, n_tracks, _WORDS, 2),
                "artists": [[a] for a in artist_names[track_artist]],
                "artist_ids": [[a] for a in artist_ids[track_artist]],
                "album": _names(rng, n_tracks, _WORDS, 1),
                "genres": genres,
                "duration_ms": rng.normal(215_000, 45_000, size=n_tracks).clip(60_000, 600_000).astype("int64"),
                "explicit": explicit,
                "release_year": rng.integers(1965, 2026, size=n_tracks).astype("int16"),
                "danceability": features[:, 0],
                "energy": features[:, 1],
                "key": rng.integers(0, 12, size=n_tracks).astype("int8"),
                "loudness": features[:, 7],
                "mode": (rng.random(n_tracks) < 0.6).astype("int8"),
                "speechiness": features[:, 5],
                "acousticness": features[:, 2],
                "instrumentalness": features[:, 3],
                "liveness": rng.beta(2, 9, size=n_tracks),
                "valence": features[:, 4],
                "tempo": features[:, 6],
                "time_signature": np.where(rng.random(n_tracks) < 0.9, 4, 3).astype("int8"),
            }
        )[TRACK_SCHEMA.names]

        # users: a few favourite genres, a preferred sound near them, a heavy-tailed activity level
        taste = rng.dirichlet(np.full(n_genres, 0.25), size=n_users)
        favourite = taste.argmax(axis=1)
        user_sound = np.clip(
            (profiles[favourite, : len(_FEATURES)] + shift) * scale + rng.normal(0.0, 0.12, (n_users, len(_FEATURES))),
            0.0,
            1.0,
        )
        # favourite artists, mostly from the user's favourite genres: listeners are loyal to artists
        user_artists = _favourite_artists(rng, taste, artist_genre)
        width = len(str(n_users))
        return cls(
            tracks=tracks,
            track_genre=genre,
            track_sound=sound,
            track_appeal=appeal,
            track_artist=track_artist,
            user_ids=np.array([f"user_{i:0{width}d}" for i in range(n_users)]),
            user_genre_taste=np.log(taste + 1e-3),
            user_sound=user_sound,
            user_activity=rng.lognormal(0.0, 0.9, size=n_users),
            user_artists=user_artists,
            seed=seed,
        )

    @property
    def n_tracks(self) -> int:
        return len(self.tracks)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    # --- taste -------------------------------------------------------------------------------------
    # raw(u, t) = 0.45 genre_taste[u, genre(t)] - _SOUND |sound_u - sound_t|² + 0.6 appeal_t is linear in
    # the track's (genre one-hot, sound, |sound|², appeal), so its mean and spread over the catalog follow
    # from that vector's mean and covariance, and one (user, track) pair costs O(1).

    @cached_property
    def _standardisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's mean and standard deviation of ``raw`` over every track of the catalog."""
        n_genres = self.user_genre_taste.shape[1]

        def track_terms(rows: slice) -> np.ndarray:
            sound = self.track_sound[rows]
            return np.column_stack(
                [np.eye(n_genres)[self.track_genre[rows]], sound, (sound**2).sum(axis=1), self.track_appeal[rows]]
            )

        chunks = [slice(i, i + 100_000) for i in range(0, self.n_tracks, 100_000)]
        mean = sum(track_terms(c).sum(axis=0) for c in chunks) / self.n_tracks
        cov = sum((f := track_terms(c) - mean).T @ f for c in chunks) / self.n_tracks
        ones = np.ones(self.n_users)
        user_terms = np.column_stack(
            [0.45 * self.user_genre_taste, 2 * _SOUND * self.user_sound, -_SOUND * ones, 0.6 * ones]
        )
        user_mean = user_terms @ mean - _SOUND * (self.user_sound**2).sum(axis=1)
        user_var = np.einsum("ij,jk,ik->i", user_terms, cov, user_terms)
        return user_mean, np.sqrt(np.maximum(user_var, 0.0))

    @cached_property
    def _favourite_keys(self) -> tuple[int, np.ndarray]:
        """The number of artists and the sorted ``user * n_artists + artist`` of every favourite."""
        artists = np.concatenate([np.zeros(0, dtype=np.int64), *self.user_artists])
        n_artists = int(max(self.track_artist.max(initial=-1), artists.max(initial=-1))) + 1
        owners = np.repeat(np.arange(self.n_users, dtype=np.int64), [len(a) for a in self.user_artists])
        return n_artists, np.sort(owners * n_artists + artists)

    def _is_favourite(self, users: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        n_artists, keys = self._favourite_keys
        if not len(keys):
            return np.zeros(len(users), dtype=bool)
        wanted = users.astype(np.int64) * n_artists + self.track_artist[tracks]
        return keys[np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)] == wanted

    def _plain_affinity(self, users: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """Affinity of aligned (user, track) pairs without the favourite-artist bonus."""
        mean, std = self._standardisation
        distance = ((self.user_sound[users] - self.track_sound[tracks]) ** 2).sum(axis=1)
        raw = (
            0.45 * self.user_genre_taste[users, self.track_genre[tracks]]
            - _SOUND * distance
            + 0.6 * self.track_appeal[tracks]
        )
        return (raw - mean[users]) / (std[users] + 1e-9)

    def affinity(self, users: np.ndarray, tracks: np.ndarray | None = None) -> np.ndarray:
        """Latent affinity (users x tracks, every track or the ``tracks`` given): the taste score
        standardised over the whole catalog (~N(0, 1) per user), plus a bonus for the user's favourite
        artists. Memory grows with users x tracks: for scattered pairs use :meth:`pair_affinity`."""
        users = np.atleast_1d(users)
        t = np.arange(self.n_tracks) if tracks is None else np.atleast_1d(tracks)
        mean, std = self._standardisation
        sound_u, sound_t = self.user_sound[users], self.track_sound[t]
        distance = (sound_u**2).sum(axis=1)[:, None] - 2 * sound_u @ sound_t.T + (sound_t**2).sum(axis=1)[None, :]
        raw = (
            0.45 * self.user_genre_taste[users][:, self.track_genre[t]]
            - _SOUND * distance
            + 0.6 * self.track_appeal[t][None, :]
        )
        z = (raw - mean[users, None]) / (std[users, None] + 1e-9)
        artists = self.track_artist[t]
        for row, u in enumerate(users):
            z[row] += 1.5 * np.isin(artists, self.user_artists[u])
        return z

    def pair_affinity(self, users: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """Affinity of aligned pairs: element i is ``affinity(users[i], tracks[i])``, in O(len(users))."""
        users, tracks = np.atleast_1d(users), np.atleast_1d(tracks)
        return self._plain_affinity(users, tracks) + 1.5 * self._is_favourite(users, tracks)

    @cached_property
    def _listen_sampler(self) -> _ListenSampler:
        return _ListenSampler(self)

    def listens(
        self, rng: np.random.Generator, counts: np.ndarray, users: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``counts[i]`` independent organic listens of user ``users[i]`` (default: of user i), drawn from
        the softmax of ``listen_sharpness * affinity(user)`` over the catalog. Returns the tracks and
        their affinities, user after user (the ``counts[0]`` listens of the first user first)."""
        counts = np.asarray(counts, dtype=np.int64)
        users = np.arange(len(counts)) if users is None else np.asarray(users, dtype=np.int64)
        if len(users) != len(counts):
            raise ValueError(f"listens got {len(counts)} counts for {len(users)} users")
        return self._listen_sampler.draw(rng, counts, users)

    # --- history -----------------------------------------------------------------------------------
    def events(self, n_events: int, days: int = 30, end: date | None = None) -> pd.DataFrame:
        """Simulate ``n_events`` feedback events over ``days`` days ending at midnight UTC of ``end``.

        Each user mixes organic listening (tracks sampled by taste) with slates shown by a legacy
        popularity recommender, some of which they click and play. Every stream yields exactly one
        outcome event (``track_completed``, ``track_skipped``, or ``play`` for a partial listen), a few
        also a ``like`` or an ``explicit_rating``.
        """
        rng = np.random.default_rng(self.seed + 1)
        end_dt = datetime.combine(end or datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
        start_ms = int((end_dt - timedelta(days=days)).timestamp() * 1000)
        budget = np.maximum(3, np.round(n_events * self.user_activity / self.user_activity.sum())).astype(np.int64)
        history = _History(self, rng, budget, start_ms, days * 86_400_000)
        history.run()
        return history.frame()


_SOUND = 0.55 / 0.08  # weight of the squared sound distance in the raw taste score
_TYPES = np.array(
    [
        "recommendation_shown",
        "recommendation_clicked",
        "track_completed",
        "track_skipped",
        "play",
        "like",
        "explicit_rating",
    ],
    dtype=object,
)
_SHOWN, _CLICKED, _COMPLETED, _SKIPPED, _PLAY, _LIKE, _RATING = range(len(_TYPES))


class _ListenSampler:
    """Exact draws from p_u(t) ∝ exp(β affinity(u, t)), β = ``listen_sharpness``, by rejection.

    The envelope bounds β·affinity cheaply per (user, genre, block of tracks): the sound term, never
    positive, by the distance from the user's sound to the box around the genre's tracks; the appeal by
    the top of the track's block (tracks of a genre grouped in appeal steps of ``APPEAL_STEP``); the
    favourite-artist bonus by an extra part for those tracks, enumerated per user. Block weights depend
    on the user's scale β/σ_u only through a grid (step ``SCALE_STEP``), at a cost of at most
    exp(|Δscale| 0.6 max|appeal|) in acceptance. About one proposal in ten is accepted and each costs
    O(1), so no draw touches the whole catalog.
    """

    APPEAL_STEP = 0.1
    SCALE_STEP = 0.02
    DRAWS_PER_CHUNK = 200_000  # users are served in groups of about this many draws (bounds memory)

    def __init__(self, world: SyntheticWorld) -> None:
        self.world = w = world
        self.beta = float(w.listen_sharpness)
        n_genres = w.user_genre_taste.shape[1]
        genre, appeal = w.track_genre, w.track_appeal
        # blocks: tracks sorted by genre then appeal, cut every APPEAL_STEP of appeal
        self.order = np.lexsort((appeal, genre))
        g_sorted, a_sorted = genre[self.order], appeal[self.order]
        lowest = np.full(n_genres, np.inf)
        np.minimum.at(lowest, genre, appeal)
        step = np.floor((a_sorted - lowest[g_sorted]) / self.APPEAL_STEP).astype(np.int64)
        key = g_sorted.astype(np.int64) * (int(step.max(initial=0)) + 1) + step
        self.block_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        self.block_size = np.diff(np.r_[self.block_start, len(key)])
        self.block_top = np.maximum.reduceat(a_sorted, self.block_start)
        self.track_block = np.empty(w.n_tracks, dtype=np.int64)
        self.track_block[self.order] = np.repeat(np.arange(len(self.block_start)), self.block_size)
        block_genre = g_sorted[self.block_start]
        # the box around each genre's sounds: no track of the genre is closer to a user than it
        self.sound_low = np.full((n_genres, w.track_sound.shape[1]), np.inf)
        self.sound_high = np.full((n_genres, w.track_sound.shape[1]), -np.inf)
        np.minimum.at(self.sound_low, genre, w.track_sound)
        np.maximum.at(self.sound_high, genre, w.track_sound)
        # users' scales on the grid, and the slack the rounding needs
        self.user_mean, std = w._standardisation
        self.scale = self.beta / (std + 1e-9)
        levels, self.user_level = np.unique(
            np.round(self.scale / self.SCALE_STEP).astype(np.int64), return_inverse=True
        )
        self.level_scale = levels * self.SCALE_STEP
        self.slack = np.abs(self.scale - self.level_scale[self.user_level]) * 0.6 * np.abs(appeal).max(initial=0.0)
        # per grid level and genre: log of the total block weight, and each block's cumulative share laid
        # out as (level * n_genres + genre) + share, so one searchsorted finds the block of any proposal
        block_log = self.level_scale[:, None] * 0.6 * self.block_top[None, :] + np.log(self.block_size)[None, :]
        self.genre_log_total = np.full((len(levels), n_genres), -np.inf)
        cumulative = np.empty(block_log.shape)
        first = _segments(np.bincount(block_genre, minlength=n_genres))
        for g in np.flatnonzero(np.diff(first)):
            part = block_log[:, first[g] : first[g + 1]]
            top = part.max(axis=1, keepdims=True)
            running = np.cumsum(np.exp(part - top), axis=1)
            self.genre_log_total[:, g] = top[:, 0] + np.log(running[:, -1])
            running /= running[:, -1:]
            running[:, -1] = 1.0
            cumulative[:, first[g] : first[g + 1]] = running + (np.arange(len(levels)) * n_genres + g)[:, None]
        self.cumulative, self.n_genres = cumulative.ravel(), n_genres
        self.log_bonus = np.log(np.expm1(1.5 * self.beta))
        n_artists, _ = w._favourite_keys
        self.artist_tracks = np.argsort(w.track_artist, kind="stable")
        self.artist_first = _segments(np.bincount(w.track_artist, minlength=n_artists))

    def draw(self, rng: np.random.Generator, counts: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        done = np.r_[0, np.cumsum(counts)]
        parts, lo = [], 0
        while lo < len(counts):
            hi = max(int(np.searchsorted(done, done[lo] + self.DRAWS_PER_CHUNK, side="right")) - 1, lo + 1)
            parts.append(self._draw_group(rng, users[lo:hi], counts[lo:hi]))
            lo = hi
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _genre_log_weight(self, users: np.ndarray) -> np.ndarray:
        """(users, genres): the log envelope of a track of that genre, before its block's appeal term."""
        w = self.world
        sound = w.user_sound[users][:, None, :]
        gap = np.maximum(np.maximum(self.sound_low[None] - sound, sound - self.sound_high[None]), 0.0)
        bound = 0.45 * w.user_genre_taste[users] - _SOUND * (gap**2).sum(axis=2) - self.user_mean[users, None]
        return self.scale[users, None] * bound + self.slack[users, None]

    def _favourite_tracks(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (position in ``users``, track of one of their favourite artists), grouped by user, with
        the log of its part of the envelope: the bonus, exp(β affinity) (e^{1.5β} - 1)."""
        w = self.world
        artists = np.concatenate([np.zeros(0, dtype=np.int64), *(w.user_artists[u] for u in users)])
        owner = np.repeat(np.arange(len(users)), [len(w.user_artists[u]) for u in users])
        sizes = self.artist_first[artists + 1] - self.artist_first[artists]
        tracks = self.artist_tracks[_ranges(self.artist_first[artists], sizes)]
        owner = np.repeat(owner, sizes)
        return owner, tracks, self.log_bonus + self.beta * w._plain_affinity(users[owner], tracks)

    def _draw_group(
        self, rng: np.random.Generator, users: np.ndarray, need: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        w, n = self.world, len(users)
        level = self.user_level[users]
        genre_log = self._genre_log_weight(users)
        mass = genre_log + self.genre_log_total[level]  # envelope mass of each genre's tracks
        top = mass.max(axis=1, keepdims=True)
        genre_cumulative = np.cumsum(np.exp(mass - top), axis=1)
        log_mass_blocks = top[:, 0] + np.log(genre_cumulative[:, -1])
        owner_f, tracks_f, log_f = self._favourite_tracks(users)
        per_user_f = np.bincount(owner_f, minlength=n)
        log_mass_f = np.full(n, -np.inf)
        np.logaddexp.at(log_mass_f, owner_f, log_f)
        from_blocks = 1.0 / (1.0 + np.exp(log_mass_f - log_mass_blocks))
        running = np.cumsum(np.exp(log_f - log_mass_f[owner_f]))
        cumulative_f = running - np.r_[0.0, running][_segments(per_user_f)[:-1]][owner_f] + owner_f
        cumulative_f[_segments(per_user_f)[1:][per_user_f > 0] - 1] = np.flatnonzero(per_user_f > 0) + 1.0

        kept_owner, kept_track, kept_z = [], [], []
        got, tried, taken = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
        while (missing := need - got).any():
            rate = (taken + 1.0) / (tried + 10.0)
            proposals = np.where(missing > 0, np.ceil(missing / rate * 1.2).astype(np.int64) + 4, 0)
            owner = np.repeat(np.arange(n), proposals)
            track = np.empty(len(owner), dtype=np.int64)
            blocks = rng.random(len(owner)) < from_blocks[owner]
            b = np.flatnonzero(blocks)
            genre = _pick(rng, genre_cumulative[owner[b]])
            where = np.searchsorted(
                self.cumulative, level[owner[b]] * self.n_genres + genre + (1.0 - rng.random(len(b)))
            )
            block = where % len(self.block_start)
            offset = np.minimum(
                (rng.random(len(b)) * self.block_size[block]).astype(np.int64), self.block_size[block] - 1
            )
            track[b] = self.order[self.block_start[block] + offset]
            f = np.flatnonzero(~blocks)
            track[f] = tracks_f[
                np.minimum(np.searchsorted(cumulative_f, owner[f] + (1.0 - rng.random(len(f)))), len(tracks_f) - 1)
            ]
            u = users[owner]
            plain, favourite = w._plain_affinity(u, track), w._is_favourite(u, track)
            envelope = (
                genre_log[owner, w.track_genre[track]]
                + self.level_scale[level[owner]] * 0.6 * self.block_top[self.track_block[track]]
            )
            envelope = np.where(favourite, np.logaddexp(envelope, self.log_bonus + self.beta * plain), envelope)
            z = plain + 1.5 * favourite
            accepted = np.flatnonzero(np.log(rng.random(len(owner))) < self.beta * z - envelope)
            np.add.at(tried, owner, 1.0)
            np.add.at(taken, owner[accepted], 1.0)
            # each user keeps their first `missing` accepted proposals
            rank = np.arange(len(accepted)) - np.searchsorted(owner[accepted], owner[accepted])
            accepted = accepted[rank < missing[owner[accepted]]]
            kept_owner.append(owner[accepted])
            kept_track.append(track[accepted])
            kept_z.append(z[accepted])
            got += np.bincount(owner[accepted], minlength=n)
        order = np.argsort(np.concatenate(kept_owner), kind="stable")
        return np.concatenate(kept_track)[order], np.concatenate(kept_z)[order]


class _History:
    """Every user's history advanced one step at a time, all users at once. A step is a slate of the
    legacy recommender (probability 0.04, with at least 12 events of budget left) or one organic listen;
    each stream ends in one outcome event and sometimes a like or a rating. User u's events fill
    ``budget[u]`` slots in the order they happen; each slate or stream takes the next instant of the
    user's clock (``budget + 64`` sorted uniform instants)."""

    def __init__(
        self, world: SyntheticWorld, rng: np.random.Generator, budget: np.ndarray, start_ms: int, span_ms: int
    ) -> None:
        self.world, self.rng, self.budget = world, rng, budget
        n_users = world.n_users
        self.first = _segments(budget)[:-1]
        total = int(budget.sum())
        self.left = budget.copy()
        self.track, self.kind, self.ts = np.zeros(total, np.int64), np.zeros(total, np.int8), np.zeros(total, np.int64)
        self.ms, self.rating = np.full(total, -1, np.int64), np.full(total, np.nan, np.float32)
        self.position, self.slate = np.full(total, -1, np.int32), np.full(total, -1, np.int64)
        ticks = budget + 64
        owner = np.repeat(np.arange(n_users, dtype=np.int64), ticks)
        self.times = np.sort(owner * span_ms + rng.integers(0, span_ms, size=len(owner))) - owner * span_ms + start_ms
        self.clock_first, self.clock_used = _segments(ticks)[:-1], np.zeros(n_users, dtype=np.int64)
        # about two events in three are organic listens: draw a bit more than that, more when one runs out
        drawn = np.minimum(budget, np.ceil(0.75 * budget).astype(np.int64) + 2)
        self.organic_track, self.organic_z = world.listens(rng, drawn)
        self.organic_next, self.organic_left = _segments(drawn)[:-1], drawn
        self.legacy = np.argsort(-world.track_appeal)[: max(50, world.n_tracks // 20)]
        self.duration = world.tracks["duration_ms"].to_numpy()
        self.slate_users: list[np.ndarray] = []
        self.slate_left: list[np.ndarray] = []
        self.n_slates = 0

    def run(self) -> None:
        active = np.flatnonzero(self.left > 0)
        while len(active):
            slate = (self.rng.random(len(active)) < 0.04) & (self.left[active] >= 12)
            self._slates(active[slate])
            self._organic(active[~slate])
            active = active[self.left[active] > 0]

    def _tick(self, users: np.ndarray) -> np.ndarray:
        at = self.clock_first[users] + self.clock_used[users]
        self.clock_used[users] += 1
        return self.times[at]

    def _emit(self, users, tracks, kind, ts, ms=None, rating=None, position=None, slate=None) -> None:  # noqa: ANN001
        """One event for each of ``users`` (distinct), in each one's next slot."""
        slot = self.first[users] + self.budget[users] - self.left[users]
        self.track[slot], self.kind[slot], self.ts[slot] = tracks, kind, ts
        for column, values in ((self.ms, ms), (self.rating, rating), (self.position, position), (self.slate, slate)):
            if values is not None:
                column[slot] = values
        self.left[users] -= 1

    def _organic(self, users: np.ndarray) -> None:
        short = users[self.organic_left[users] == 0]
        if len(short):  # one organic listen per event left is always enough
            tracks, z = self.world.listens(self.rng, self.left[short], short)
            self.organic_next[short] = len(self.organic_track) + _segments(self.left[short])[:-1]
            self.organic_left[short] = self.left[short]
            self.organic_track, self.organic_z = (
                np.concatenate([self.organic_track, tracks]),
                np.concatenate([self.organic_z, z]),
            )
        at = self.organic_next[users]
        self.organic_next[users] += 1
        self.organic_left[users] -= 1
        self._streams(users, self.organic_track[at], self.organic_z[at], self._tick(users))

    def _slates(self, users: np.ndarray) -> None:
        n, rng = len(users), self.rng
        if not n:
            return
        ts = self._tick(users)
        picks = rng.integers(0, len(self.legacy), size=(n, 10))
        while (repeated := (np.diff(np.sort(picks, axis=1), axis=1) == 0).any(axis=1)).any():  # 10 distinct tracks
            picks[repeated] = rng.integers(0, len(self.legacy), size=(int(repeated.sum()), 10))
        slate = self.legacy[picks]
        ids = self.n_slates + np.arange(n)
        self.n_slates += n
        self.slate_users.append(users)
        self.slate_left.append(self.left[users].copy())
        for pos in range(10):
            self._emit(users, slate[:, pos], _SHOWN, ts, position=pos, slate=ids)
        z = self.world.pair_affinity(np.repeat(users, 10), slate.ravel()).reshape(n, 10)
        clicked = rng.random((n, 10)) < click_given_affinity(z)
        clicked &= np.cumsum(clicked, axis=1) <= self.left[users][:, None]  # clicks fit in the budget
        when = np.zeros((n, 10), dtype=np.int64)
        for pos in range(10):
            on = clicked[:, pos]
            when[on, pos] = self._tick(users[on])
            self._emit(users[on], slate[on, pos], _CLICKED, when[on, pos], slate=ids[on])
        for pos in range(10):
            on = clicked[:, pos] & (self.left[users] > 0)
            self._streams(users[on], slate[on, pos], z[on, pos], when[on, pos])

    def _streams(self, users: np.ndarray, tracks: np.ndarray, z: np.ndarray, when: np.ndarray) -> None:
        n, rng = len(users), self.rng
        if not n:
            return
        r, p_done = rng.random(n), completion_given_affinity(z)
        done = r < p_done
        skipped = ~done & (r < p_done + 0.7 * (1 - p_done))
        duration = self.duration[tracks]
        partial = (rng.uniform(0.3, 0.8, size=n) * duration).astype(np.int64)
        ms = np.where(done, duration, np.where(skipped, rng.integers(3_000, 30_000, size=n), partial))
        self._emit(users, tracks, np.where(done, _COMPLETED, np.where(skipped, _SKIPPED, _PLAY)), when, ms=ms)
        like = (self.left[users] > 0) & (z > 1.0) & (rng.random(n) < 0.12)
        self._emit(users[like], tracks[like], _LIKE, when[like] + 1000)
        rated = (self.left[users] > 0) & (rng.random(n) < 0.03)
        rating = np.clip(np.round(3.0 + 1.1 * z[rated] + rng.normal(0, 0.6, size=int(rated.sum()))), 1, 5)
        self._emit(users[rated], tracks[rated], _RATING, when[rated] + 2000, rating=rating)

    def frame(self) -> pd.DataFrame:
        """The events in time order (a user's events at one instant in the order they happened)."""
        w = self.world
        order = np.argsort(self.ts, kind="stable")  # slots are user after user, each user's in order
        slate_users = np.concatenate([np.zeros(0, dtype=np.int64), *self.slate_users])
        slate_left = np.concatenate([np.zeros(0, dtype=np.int64), *self.slate_left])
        requests = np.array([f"legacy-{u}-{left}" for u, left in zip(slate_users, slate_left)] + [None], dtype=object)
        slate, ms, rating, position = self.slate[order], self.ms[order], self.rating[order], self.position[order]
        frame = pd.DataFrame(
            {
                "event_id": [f"syn-{w.seed}-{i:09d}" for i in order],
                "user_id": w.user_ids.astype(object)[np.repeat(np.arange(w.n_users), self.budget)[order]],
                "track_id": w.tracks["track_id"].to_numpy(dtype=object)[self.track[order]],
                "type": _TYPES[self.kind[order]],
                "timestamp": pd.to_datetime(self.ts[order], unit="ms", utc=True),
                "ms_played": pd.arrays.IntegerArray(ms, ms < 0),
                "rating": pd.arrays.FloatingArray(rating, np.isnan(rating)),
                "request_id": requests[slate],
                "algorithm": np.where(slate >= 0, "legacy_popularity", None),
                "model_version": None,
                "experiment_id": None,
                "variant": None,
                "position": pd.arrays.IntegerArray(position, position < 0),
                "source": "synthetic",
            }
        )
        return frame.reindex(columns=EVENT_SCHEMA.names)


def extended_history_export(
    world: SyntheticWorld, events: pd.DataFrame, username: str | None = None, seed: int = 0
) -> list[dict]:
    """The streams among ``events`` as rows of a Spotify extended streaming history export, with the
    PII fields a real export carries (IP address, platform, country, optionally a username) and a few
    podcast rows and incognito sessions mixed in, for testing and benchmarking the importer."""
    rng = np.random.default_rng(seed)
    streams = events[events["type"].isin(["track_completed", "track_skipped", "play"])]
    meta = world.tracks.set_index("track_id")
    names, artists, albums = meta["name"], meta["artists"].map(lambda a: a[0]), meta["album"]
    reason = {"track_completed": "trackdone", "track_skipped": "fwdbtn", "play": "endplay"}
    rows = []
    for ts, track, kind, ms in zip(streams["timestamp"], streams["track_id"], streams["type"], streams["ms_played"]):
        ip = f"{rng.integers(1, 255)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{rng.integers(1, 255)}"
        row = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "platform": "Android OS 14 API 34 (Google, Pixel 8)",
            "ms_played": int(ms) if ms is not pd.NA else 0,
            "conn_country": "SE",
            "ip_addr": ip,
            "master_metadata_track_name": names[track],
            "master_metadata_album_artist_name": artists[track],
            "master_metadata_album_album_name": albums[track],
            "spotify_track_uri": f"spotify:track:{track}",
            "episode_name": None,
            "episode_show_name": None,
            "spotify_episode_uri": None,
            "reason_start": "clickrow",
            "reason_end": reason[kind],
            "shuffle": bool(rng.random() < 0.3),
            "skipped": kind == "track_skipped",
            "offline": False,
            "offline_timestamp": None,
            "incognito_mode": bool(rng.random() < 0.01),
        }
        if username:
            row["username"] = username
        rows.append(row)
        if rng.random() < 0.02:  # a podcast episode: no track fields
            rows.append(
                {
                    **row,
                    "master_metadata_track_name": None,
                    "master_metadata_album_artist_name": None,
                    "master_metadata_album_album_name": None,
                    "spotify_track_uri": None,
                    "episode_name": "Episode",
                    "episode_show_name": "Show",
                    "spotify_episode_uri": "spotify:episode:0Q86acNRm6V9GYx55SXKwf",
                }
            )
    return rows
