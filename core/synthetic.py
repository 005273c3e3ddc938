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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

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
_FEATURES = ("danceability", "energy", "acousticness", "instrumentalness", "valence", "speechiness", "tempo", "loudness")
_SYLLABLES = "ka lo mi ra ven tor sel an bri dus el fa gon hal iro jun kel lum nor ost pra qui ros sta tun ul vor wyn xa yel zor".split()
_WORDS = "night blue fire river heart city dream gold shadow summer rain light wild echo stone velvet electric silent neon ocean".split()
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def _spotify_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    ids = np.unique(["".join(row) for row in _BASE62[rng.integers(0, 62, size=(int(n * 1.01) + 8, 22))]])
    rng.shuffle(ids)
    return ids[:n]


def _names(rng: np.random.Generator, n: int, parts: list[str], k: int) -> list[str]:
    picks = rng.integers(0, len(parts), size=(n, k))
    return [" ".join(parts[j] for j in row).title() for row in picks]


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
    def generate(cls, n_tracks: int, n_users: int, seed: int = 7) -> "SyntheticWorld":
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
        artist_pull = np.exp(3.0 * taste[:, artist_genre])  # (n_users, n_artists)
        artist_pull /= artist_pull.sum(axis=1, keepdims=True)
        user_artists = [
            rng.choice(n_artists, size=min(n_artists, 3 + rng.poisson(6)), replace=False, p=row) for row in artist_pull
        ]
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

    def affinity(self, users: np.ndarray, tracks: np.ndarray | None = None) -> np.ndarray:
        """Latent affinity (users x tracks): standardised taste score, plus a bonus for the user's
        favourite artists."""
        users = np.atleast_1d(users)
        t = slice(None) if tracks is None else tracks
        genre_term = self.user_genre_taste[users][:, self.track_genre[t]]  # (u, t)
        diff = self.user_sound[users][:, None, :] - self.track_sound[t][None, :, :]
        sound_term = -(diff**2).sum(axis=2) / 0.08
        raw = 0.45 * genre_term + 0.55 * sound_term + 0.6 * self.track_appeal[t][None, :]
        z = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-9)
        artists = self.track_artist[t]
        for row, u in enumerate(users):
            z[row] += 1.5 * np.isin(artists, self.user_artists[u])
        return z

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
        span_ms = days * 86_400_000
        budget = np.maximum(3, np.round(n_events * self.user_activity / self.user_activity.sum())).astype(int)
        legacy_slate = np.argsort(-self.track_appeal)[: max(50, self.n_tracks // 20)]
        duration = self.tracks["duration_ms"].to_numpy()

        columns: dict[str, list] = {k: [] for k in ("user", "track", "type", "ts", "ms", "rating", "pos", "req")}

        def emit(user, track, kind, ts, ms=None, rating=None, pos=None, req=None):
            columns["user"].append(user)
            columns["track"].append(track)
            columns["type"].append(kind)
            columns["ts"].append(ts)
            columns["ms"].append(ms)
            columns["rating"].append(rating)
            columns["pos"].append(pos)
            columns["req"].append(req)

        for u in range(self.n_users):
            aff = self.affinity(np.array([u]))[0]
            listen_p = np.exp(self.listen_sharpness * (aff - aff.max()))
            listen_p /= listen_p.sum()
            remaining = int(budget[u])
            times = np.sort(rng.integers(start_ms, start_ms + span_ms, size=remaining + 64))
            clock = iter(times)
            organic = iter(rng.choice(self.n_tracks, size=remaining, p=listen_p))
            while remaining > 0:
                if rng.random() < 0.04 and remaining >= 12:  # a slate from the legacy recommender
                    req = f"legacy-{u}-{remaining}"
                    slate = rng.choice(legacy_slate, size=10, replace=False)
                    ts = next(clock)
                    for pos, t in enumerate(slate):
                        emit(u, t, "recommendation_shown", ts, pos=pos, req=req)
                    remaining -= 10
                    clicked = slate[rng.random(10) < click_given_affinity(aff[slate])]
                    streams = [(t, next(clock, ts)) for t in clicked[:remaining]]
                    for t, when in streams:
                        emit(u, t, "recommendation_clicked", when, req=req)
                        remaining -= 1
                else:
                    streams = [(next(organic), next(clock))]
                for t, when in streams:
                    if remaining <= 0:
                        break
                    z = aff[t]
                    r = rng.random()
                    p_done = completion_given_affinity(z)
                    if r < p_done:
                        emit(u, t, "track_completed", when, ms=int(duration[t]))
                    elif r < p_done + 0.7 * (1 - p_done):
                        emit(u, t, "track_skipped", when, ms=int(rng.integers(3_000, 30_000)))
                    else:
                        emit(u, t, "play", when, ms=int(rng.uniform(0.3, 0.8) * duration[t]))
                    remaining -= 1
                    if remaining > 0 and z > 1.0 and rng.random() < 0.12:
                        emit(u, t, "like", when + 1000)
                        remaining -= 1
                    if remaining > 0 and rng.random() < 0.03:
                        rating = float(np.clip(np.round(3.0 + 1.1 * z + rng.normal(0, 0.6)), 1, 5))
                        emit(u, t, "explicit_rating", when + 2000, rating=rating)
                        remaining -= 1

        n = len(columns["user"])
        track_ids = self.tracks["track_id"].to_numpy()
        frame = pd.DataFrame(
            {
                "event_id": [f"syn-{self.seed}-{i:09d}" for i in range(n)],
                "user_id": self.user_ids[np.asarray(columns["user"], dtype=int)],
                "track_id": track_ids[np.asarray(columns["track"], dtype=int)],
                "type": columns["type"],
                "timestamp": pd.to_datetime(np.asarray(columns["ts"], dtype="int64"), unit="ms", utc=True),
                "ms_played": pd.array(columns["ms"], dtype="Int64"),
                "rating": pd.array(columns["rating"], dtype="Float32"),
                "request_id": columns["req"],
                "algorithm": ["legacy_popularity" if r else None for r in columns["req"]],
                "model_version": None,
                "experiment_id": None,
                "variant": None,
                "position": pd.array(columns["pos"], dtype="Int32"),
                "source": "synthetic",
            }
        )
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)[EVENT_SCHEMA.names]


def extended_history_export(world: SyntheticWorld, events: pd.DataFrame, username: str | None = None, seed: int = 0) -> list[dict]:
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
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "platform": "Android OS 14 API 34 (Google, Pixel 8)",
            "ms_played": int(ms) if ms is not pd.NA else 0, "conn_country": "SE", "ip_addr": ip,
            "master_metadata_track_name": names[track], "master_metadata_album_artist_name": artists[track],
            "master_metadata_album_album_name": albums[track], "spotify_track_uri": f"spotify:track:{track}",
            "episode_name": None, "episode_show_name": None, "spotify_episode_uri": None,
            "reason_start": "clickrow", "reason_end": reason[kind], "shuffle": bool(rng.random() < 0.3),
            "skipped": kind == "track_skipped", "offline": False, "offline_timestamp": None,
            "incognito_mode": bool(rng.random() < 0.01),
        }  # fmt: skip
        if username:
            row["username"] = username
        rows.append(row)
        if rng.random() < 0.02:  # a podcast episode: no track fields
            rows.append({**row, "master_metadata_track_name": None, "master_metadata_album_artist_name": None,
                         "master_metadata_album_album_name": None, "spotify_track_uri": None,
                         "episode_name": "Episode", "episode_show_name": "Show",
                         "spotify_episode_uri": "spotify:episode:0Q86acNRm6V9GYx55SXKwf"})  # fmt: skip
    return rows
