"""The taste shift of issue 21 as the benchmarks run it through the API, shared by ``bench/taste_shift.py``
(which launches the retrain itself) and ``bench/loop.py --trigger drift`` (where the drift monitor does):
the listeners (about 100 earlier events each), the genre filling the smallest share of their history, the
15 likes + 15 completions each posts, and the calls that measure the genre's share of their top-10."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

KEY = "bench-client-key-0123456789abcdef"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
LISTENERS, HISTORY, TRACKS_EACH = 100, 100, 15


class Lists(Protocol):
    def top(self, user: str, k: int = 10) -> dict: ...


def call(url: str, body: object | None = None, key: str = KEY) -> dict | list:
    """A JSON request to the API (POST when ``body`` is given, empty POST when it is ``b""``) with ``key``."""
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def genre_share(api: Lists, users: list[str], genre: str) -> tuple[float, set[str]]:
    """The share of ``genre`` among the tracks of the users' top-10 as ``api`` serves them, and the model
    versions that served them."""
    shown, hits, versions = 0, 0, set()
    for user in users:
        body = api.top(user)
        versions.add(body["model_version"])
        shown += len(body["tracks"])
        hits += sum(genre in t["genres"] for t in body["tracks"])
    return hits / max(shown, 1), versions


def serve_the_model(api: Lists, base: str, probe: str, timeout: float = 30) -> list[str]:
    """Stops every running experiment through the admin API (the demo's: its popularity arm does not
    learn), then waits until ``probe``'s list comes from no experiment. Returns the ids stopped."""
    stopped = [e["id"] for e in call(f"{base}/experiments") if e["status"] == "running"]
    for experiment in stopped:
        call(f"{base}/experiments/{experiment}/stop", b"", key=ADMIN_KEY)
    deadline = time.monotonic() + timeout
    while (
        api.top(probe)["experiment"] is not None
    ):  # the stopping process serves it at once; others read experiments every 5 s
        if time.monotonic() > deadline:
            raise RuntimeError(f"{probe} is still served by an experiment {timeout:.0f} s after stopping {stopped}")
        time.sleep(0.5)
    return stopped


def scenario(
    tables: Path, rng: np.random.Generator, genre: str | None = None
) -> tuple[list[str], str, dict[str, list[str]]]:
    """The ``LISTENERS`` listeners with the closest to ``HISTORY`` earlier events of their own (the demo
    experiment's simulated listening left out, as training leaves it out), the genre filling the smallest
    share of their history (among genres with tracks enough to fill their lists after they heard some),
    and the ``TRACKS_EACH`` tracks of it each one takes to. ``genre``: that genre instead."""
    from core.contracts.events import SIMULATED_SOURCE

    tracks, events = pd.read_parquet(tables / "tracks.parquet"), pd.read_parquet(tables / "events")
    genre_of = tracks.set_index("track_id")["genres"].map(lambda g: g[0])
    heard = events[(events["type"] != "recommendation_shown") & (events["source"] != SIMULATED_SOURCE)]
    sizes = heard.groupby("user_id").size()
    listeners = list((sizes - HISTORY).abs().sort_values(kind="stable").index[:LISTENERS])
    shares = heard[heard["user_id"].isin(listeners)]["track_id"].map(genre_of).value_counts(normalize=True)
    big = genre_of.value_counts().loc[lambda n: n >= 4 * TRACKS_EACH].index
    genre = genre or shares.reindex(sorted(big), fill_value=0.0).idxmin()
    pool = genre_of.index[genre_of == genre].to_numpy()
    return listeners, genre, {u: list(rng.choice(pool, TRACKS_EACH, replace=False)) for u in listeners}


def shift_events(chosen: dict[str, list[str]]) -> list[dict]:
    """Each listener likes and completes each of their chosen tracks: the events ``POST /feedback`` takes
    (no timestamp: the API stamps them now)."""
    return [
        event
        for user, tracks in chosen.items()
        for track in tracks
        for event in (
            {"user_id": user, "track_id": track, "type": "like"},
            {"user_id": user, "track_id": track, "type": "track_completed", "ms_played": 240_000},
        )
    ]


def post(base: str, events: list[dict], batch: int = 500) -> None:
    for start in range(0, len(events), batch):
        call(f"{base}/feedback", events[start : start + batch])


def wait_applied(stream, accepted: int, timeout: float = 120) -> float:
    """Seconds until the worker applied ``accepted`` events (``stream``: a core.feedback_stream.FeedbackStream)."""
    started = time.monotonic()
    while stream.counters().get("applied", 0) < accepted:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the worker applied {stream.counters()} of {accepted} events in {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started
