"""Algorithms by name, and loading a saved model folder of any of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.base import Recommender
from models.content import ContentBased
from models.ease import EASE
from models.genre_popularity import GenrePopularity
from models.lightfm_hybrid import LightFMHybrid
from models.lowrank_ease import LowRankEASE
from models.popularity import Popularity

ALGORITHMS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, GenrePopularity, ContentBased, EASE, LowRankEASE, LightFMHybrid)
}
SERVABLE_ALGORITHMS: tuple[str, ...] = tuple(sorted(n for n, cls in ALGORITHMS.items() if cls.servable))
# the best measured on Last.fm (bench/quality_lastfm.py), servable (64 dimensions) and cold-start capable
DEFAULT_ALGORITHM = "lowrank_ease"


def create(name: str, **params: Any) -> Recommender:
    """A fresh, unfitted model of algorithm ``name``."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}") from None
    return cls(**params)


def check_servable(name: str) -> str:
    """``name`` if models of that algorithm can be served online (vectors and a linear fold-in), else
    ValueError saying which algorithms can."""
    cls = ALGORITHMS.get(name)
    if cls is None:
        raise ValueError(f"unknown algorithm {name!r}; servable algorithms: {', '.join(SERVABLE_ALGORITHMS)}")
    if not cls.servable:
        raise ValueError(
            f"algorithm {name!r} cannot be served online: {cls.not_servable_because}. "
            f"The pipeline trains what the API serves: choose one of {', '.join(SERVABLE_ALGORITHMS)} "
            "(`echotune train` still trains any algorithm offline)"
        )
    return name


def load(path: str | Path) -> Recommender:
    """Load a model folder written by :meth:`Recommender.save`."""
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not a saved model folder (no model.json)")
    meta = json.loads(meta_file.read_text())
    cls = ALGORITHMS.get(meta["algorithm"])
    if cls is None:
        raise ValueError(f"{path} holds unknown algorithm {meta['algorithm']!r}")
    return cls._from_folder(path, meta)
