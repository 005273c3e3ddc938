"""Catalog files a user would import, written for tests (the Spotify schema of core.ingest.track_files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_new_genre_tracks(path: Path, n: int = 3, duration_ms: int = 200_000) -> list[str]:
    """``n`` tracks of a genre nobody has heard of, with audio features, as a CSV at ``path``; returns
    their ids."""
    ids = ["0" * 19 + f"N{i:02d}" for i in range(n)]
    pd.DataFrame(
        {
            "id": ids,
            "name": [f"New {i}" for i in range(n)],
            "artists": "Newcomer",
            "genres": "brand new genre",
            "energy": 0.9,
            "danceability": 0.8,
            "valence": 0.7,
            "tempo": 128.0,
            "acousticness": 0.1,
            "duration_ms": duration_ms,
        }
    ).to_csv(path, index=False)
    return ids
