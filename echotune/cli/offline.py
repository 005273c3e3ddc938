"""Offline commands for batch jobs and people outside Dagster: ``echotune train``, ``recommend`` and
``evaluate`` on any interactions file (CSV or Parquet; see :func:`models.inputs.interactions_frame`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


def _params(value: str | None) -> dict:
    if not value:
        return {}
    try:
        params = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--params") from None
    if not isinstance(params, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"dimensions\": 64}'", param_hint="--params")
    return params


def _inputs(interactions: Path, item_features: Path | None):
    import warnings

    from models.inputs import RawCountsWarning, interactions_frame, item_features_from_file
    from models.interactions import Interactions

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RawCountsWarning)
            frame = interactions_frame(interactions)
        for warning in caught:
            click.echo(f"warning: {warning.message}", err=True)
        matrix = Interactions.from_frame(frame)
        features = item_features_from_file(item_features, matrix.item_ids) if item_features else None
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    return frame, matrix, features


def _create(algorithm: str, params: dict):
    from models import create

    try:
        return create(algorithm, **params)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_ALGORITHM_HELP = "Algorithm (default: the best default, lowrank_ease). See models.ALGORITHMS."


@click.command()
@click.option(
    "--interactions",
    required=True,
    type=_FILE,
    help="CSV or Parquet: user_id, item_id|track_id, weight|count[, timestamp].",
)
@click.option(
    "--item-features", type=_FILE, help="CSV or Parquet: item_id|track_id, feature[, weight], or a track table."
)
@click.option("--algorithm", default=None, help=_ALGORITHM_HELP)
@click.option("--params", default=None, help="Algorithm parameters as JSON, e.g. '{\"dimensions\": 64}'.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to save the model in."
)
def train(interactions: Path, item_features: Path | None, algorithm: str | None, params: str | None, out: Path) -> None:
    """Fit a model on every interaction of a file and save it; prints a JSON summary."""
    from models import DEFAULT_ALGORITHM

    _, matrix, features = _inputs(interactions, item_features)
    model = _create(algorithm or DEFAULT_ALGORITHM, _params(params))
    started = time.perf_counter()
    try:
        model.fit(matrix, features)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    fit_seconds = time.perf_counter() - started
    model.save(out)
    summary = {
        "algorithm": model.name,
        "params": model.params,
        "users": matrix.n_users,
        "items": matrix.n_items,
        "interactions": matrix.nnz,
        "dimensions": int(model.item_vectors().shape[1]),
        "fit_seconds": round(fit_seconds, 3),
        "model": str(out),
    }
    click.echo(json.dumps(summary, default=str))


@click.command()
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder written by `echotune train`.",
)
@click.option("--users", required=True, type=_FILE, help="Text file with one user id per line.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="Recommendations per user.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to write: user_id,item_id,rank,score.",
)
def recommend(model_dir: Path, users: Path, k: int, out: Path) -> None:
    """Top-k items for each listed user, never an item the user has in the training data."""
    import numpy as np
    import pandas as pd

    from models import load

    try:
        model = load(model_dir)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    wanted = [line.strip() for line in users.read_text().splitlines() if line.strip()]
    index = {u: i for i, u in enumerate(model.user_ids)}
    known = [u for u in wanted if u in index]
    if len(known) < len(wanted):
        click.echo(
            f"{len(wanted) - len(known)} of {len(wanted)} users in {users} are not in the model (no training interactions): no rows for them",
            err=True,
        )
    frames = []
    for start in range(0, len(known), 2048):
        chunk = known[start : start + 2048]
        rows = np.array([index[u] for u in chunk], dtype=np.int64)
        exclude = model.train_matrix[rows] if model.train_matrix is not None else None
        items, scores = model.recommend(rows, k=k, exclude=exclude)
        user_col = np.repeat(np.array(chunk, dtype=object), k)
        ranks = np.tile(np.arange(1, k + 1), len(chunk))
        valid = items.ravel() >= 0
        frames.append(
            pd.DataFrame(
                {
                    "user_id": user_col[valid],
                    "item_id": model.item_ids[items.ravel()[valid]],
                    "rank": ranks[valid],
                    "score": scores.ravel()[valid],
                }
            )
        )
    result = pd.concat(frames) if frames else pd.DataFrame(columns=["user_id", "item_id", "rank", "score"])
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    click.echo(f"wrote {len(result)} recommendations for {len(known)} users to {out}", err=True)


@click.command()
@click.option(
    "--interactions",
    required=True,
    type=_FILE,
    help="CSV or Parquet: user_id, item_id|track_id, weight|count[, timestamp].",
)
@click.option(
    "--item-features",
    type=_FILE,
    help="CSV or Parquet item features (needed by content, genre_popularity, cold start).",
)
@click.option("--algorithm", default=None, help=_ALGORITHM_HELP)
@click.option("--params", default=None, help="Algorithm parameters as JSON.")
@click.option(
    "--split",
    "split_name",
    type=click.Choice(["random", "time", "cold_start"]),
    default="random",
    show_default=True,
    help="random: a share of each user's items; time: the last --days days; cold_start: a share of the items with all their interactions.",
)
@click.option("--test-share", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option(
    "--min-items",
    default=5,
    show_default=True,
    type=int,
    help="random split: users with fewer items are not evaluated.",
)
@click.option(
    "--days", default=7.0, show_default=True, type=float, help="time split: test = the last N days of the file."
)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1))
def evaluate(
    interactions: Path,
    item_features: Path | None,
    algorithm: str | None,
    params: str | None,
    split_name: str,
    test_share: float,
    min_items: int,
    days: float,
    seed: int,
    k: int,
) -> None:
    """Fit on a split's training part and print its held-out metrics as JSON: precision, recall, NDCG,
    MAP, hit rate at k, AUC, coverage, novelty, diversity."""
    import pandas as pd

    from models import DEFAULT_ALGORITHM
    from models.evaluation import cold_start_split, random_holdout, time_split
    from models.evaluation import evaluate as evaluate_model
    from models.evaluation.splits import last_seen_matrix

    frame, matrix, features = _inputs(interactions, item_features)
    if split_name == "random":
        split = random_holdout(matrix, test_share=test_share, min_items=min_items, seed=seed)
    elif split_name == "cold_start":
        split = cold_start_split(matrix, item_share=test_share, seed=seed)
    else:
        if "timestamp" not in frame:
            raise click.ClickException(f"{interactions}: the time split needs a 'timestamp' column")
        cutoff = frame["timestamp"].max() - pd.Timedelta(days=days)
        split = time_split(matrix, last_seen_matrix(frame, matrix), cutoff=cutoff.timestamp())
    if split.test.nnz == 0:
        raise click.ClickException(
            f"the {split_name} split of {interactions} has no test interactions: change --test-share, --min-items or --days"
        )
    model = _create(algorithm or DEFAULT_ALGORITHM, _params(params))
    started = time.perf_counter()
    try:
        model.fit(split.train, features)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_model(model, split, k=k)
    report = {"algorithm": model.name, "split": split_name, "k": k, "fit_seconds": round(fit_seconds, 3), **metrics}
    json.dump(report, sys.stdout, indent=2)
    click.echo()


COMMANDS = [train, recommend, evaluate]
