"""Shared by the Last.fm benchmarks: the HetRec 2011 Last.fm files as EchoTune inputs, and a way to
measure a fit's time and peak memory in a fresh process."""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.features import ItemFeatures

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "hetrec-lastfm"
THREADS = {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def listens(folder: Path) -> pd.DataFrame:
    """``user_artists.dat`` as (user_id, item_id, count), ids as strings."""
    path = folder / "user_artists.dat"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass --data with the hetrec-lastfm folder")
    frame = pd.read_csv(path, sep="\t", dtype={"userID": str, "artistID": str})
    return frame.rename(columns={"userID": "user_id", "artistID": "item_id", "weight": "count"})


def tag_assignments(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "user_taggedartists.dat", sep="\t", dtype={"artistID": str, "tagID": str})


def tag_features(assignments: pd.DataFrame, item_ids: np.ndarray, n_tags: int = 1000) -> ItemFeatures:
    """The ``n_tags`` most-used tags per artist: log1p(assignment count), rows scaled to sum 1."""
    top = assignments["tagID"].value_counts().index[:n_tags]
    counts = assignments[assignments["tagID"].isin(top)].groupby(["artistID", "tagID"]).size().reset_index(name="n")
    pairs = pd.DataFrame(
        {"item_id": counts["artistID"], "feature": "tag:" + counts["tagID"], "weight": np.log1p(counts["n"].to_numpy())}
    )
    raw = ItemFeatures.from_pairs(item_ids, pairs)
    return ItemFeatures(item_ids=raw.item_ids, matrix=raw.normalized().tocsr(), names=raw.names)


def _child(queue: multiprocessing.Queue, fn: Callable[..., Any], args: tuple) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        result = fn(*args)
        queue.put(
            ("ok", result, time.perf_counter() - started, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        )
    except Exception as error:  # reported by the parent, which goes on with the other models
        queue.put(("error", repr(error), 0.0, before, before))


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run ``fn(*args)`` in a spawned process; returns its result and the process's peak RSS in MB.
    ``fn`` must be importable (module level) and its result picklable."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, fn, args))
    process.start()
    status, result, _, _, peak_kb = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(result)
    return result, peak_kb / 1024
