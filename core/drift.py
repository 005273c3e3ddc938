"""Drift of live listening against what the champion learned from.

The reference window is the champion's training data (events up to its ``trained_until``, the last
``window_days`` of them); the current window is the live feedback the API accepted since. Each event is
described by what a listener does (the event type), what they play (the track's genre and audio
features) and how active they are (their events in the window); Evidently's column drift tests
compare the two windows and the share of drifted columns is the verdict (:data:`DRIFT_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.storage import StoragePath, local_file
from models.features import CONTINUOUS_FEATURES

CATEGORICAL = ["type", "genre"]
NUMERICAL = [*CONTINUOUS_FEATURES, "user_events"]
DRIFT_COLUMNS = [*CATEGORICAL, *NUMERICAL]
MAX_ROWS = 20_000  # per window: the tests are about distributions, and Evidently's time grows with rows
WINDOW_DAYS = 7.0  # the reference window: the last week of the champion's training data


@dataclass
class DriftResult:
    """What the monitor found; ``share`` is None when a window had too few events to compare."""

    reference_events: int
    current_events: int
    share: float | None = None
    reference_compared: int = 0  # events of each window described and compared: a sample of at most MAX_ROWS
    current_compared: int = 0
    drifted: dict[str, float] = field(default_factory=dict)  # column -> p-value (or distance) of the drifted ones
    ctr_by_model_version: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why nothing was compared
    snapshot: object | None = None  # Evidently's run, for the HTML report


def windows(
    events: pd.DataFrame, trained_until_ms: int, window_days: float = WINDOW_DAYS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current): the last ``window_days`` of events the model was trained on, and the live
    events (source ``api``) after it."""
    when = pd.to_datetime(events["timestamp"], utc=True)
    until = pd.Timestamp(trained_until_ms, unit="ms", tz="UTC")
    reference = events[(when <= until) & (when > until - pd.Timedelta(days=window_days))]
    current = events[(when > until) & (events["source"] == "api")]
    return reference, current


def catalog_columns(names: list[str]) -> list[str]:
    """The catalog columns :func:`describe` reads, of a table with columns ``names`` (the monitor reads
    only these: the catalog's names, artists and the rest stay on disk)."""
    return [c for c in ("track_id", "genres", *CONTINUOUS_FEATURES) if c in names]


def describe(events: pd.DataFrame, catalog: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per event (at most MAX_ROWS, a seeded sample): type, first genre and audio features of its
    track, and the user's number of events in the whole window (counted before sampling: in a sample of
    a large window nearly every user would have one)."""
    user_events = events.groupby("user_id")["user_id"].transform("size").to_numpy(dtype=float)
    if len(events) > MAX_ROWS:
        picked = np.sort(np.random.default_rng(seed).choice(len(events), MAX_ROWS, replace=False))
        events, user_events = events.iloc[picked], user_events[picked]
    tracks = catalog.set_index("track_id")
    rows = pd.DataFrame({"type": events["type"].astype(str).to_numpy()})
    genres = tracks["genres"].reindex(events["track_id"]) if "genres" in tracks else pd.Series([None] * len(events))
    rows["genre"] = [g[0] if g is not None and len(g) else "unknown" for g in genres]
    for feature in CONTINUOUS_FEATURES:
        values = (
            tracks[feature].reindex(events["track_id"])
            if feature in tracks
            else pd.Series(np.nan, index=range(len(events)))
        )
        rows[feature] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    rows["user_events"] = user_events
    return rows


def ctr_by_model_version(current: pd.DataFrame) -> dict[str, float]:
    """Clicks per recommendation shown in the live window, by the model version that served the list."""
    served = current[current["model_version"].notna()]
    shown = served[served["type"] == "recommendation_shown"].groupby("model_version").size()
    clicked = served[served["type"] == "recommendation_clicked"].groupby("model_version").size()
    return {str(v): float(clicked.get(v, 0) / n) for v, n in shown.items() if n > 0}


def measure(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    trained_until_ms: int,
    window_days: float = WINDOW_DAYS,
    min_events: int = 200,
) -> DriftResult:
    """Compare the live window with the champion's training window (see the module docstring)."""
    reference, current = windows(events, trained_until_ms, window_days)
    result = DriftResult(
        reference_events=len(reference), current_events=len(current), ctr_by_model_version=ctr_by_model_version(current)
    )
    if len(reference) < min_events or len(current) < min_events:
        result.reason = f"too few events to compare: {len(reference):,} in the training window, {len(current):,} live (need {min_events:,} each)"
        return result
    ref, cur = describe(reference, catalog), describe(current, catalog)
    result.reference_compared, result.current_compared = len(ref), len(cur)
    columns = [c for c in DRIFT_COLUMNS if ref[c].notna().any() and cur[c].notna().any()]
    result.snapshot = _evidently(ref[columns], cur[columns], columns)
    drifted = {}
    for metric in result.snapshot.dict()["metrics"]:
        name = metric.get("metric_name", "")
        if name.startswith("DriftedColumnsCount"):
            result.share = float(metric["value"]["share"])
        elif name.startswith("ValueDrift(column="):
            column = name[len("ValueDrift(column=") :].split(",", 1)[0]
            threshold = float(name.rsplit("threshold=", 1)[1].rstrip(")"))
            value = float(metric["value"])
            # p-value tests drift below the threshold, distance measures above it
            if ("p_value" in name and value < threshold) or ("p_value" not in name and value >= threshold):
                drifted[column] = value
    result.drifted = drifted
    return result


def _evidently(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]):
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[c for c in columns if c in NUMERICAL],
        categorical_columns=[c for c in columns if c in CATEGORICAL],
    )
    with warnings.catch_warnings():  # scipy's chi-square warns on categories one window lacks; the test still answers
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def save_report(result: DriftResult, folder: StoragePath, name: str, keep: int = 10) -> StoragePath | None:
    """Write the Evidently HTML to ``folder/name`` (local or shared storage) and keep only the
    ``keep`` newest reports there."""
    if result.snapshot is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with local_file(path) as local:
        result.snapshot.save_html(str(local))
    for old in sorted(folder.glob("*.html"))[:-keep]:
        old.unlink(missing_ok=True)
    return path
