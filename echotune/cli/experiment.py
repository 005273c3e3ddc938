"""``echotune experiment ...``: rerun any experiment's analysis offline, from an events file."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def experiment() -> None:
    """Analyse experiments outside the pipeline."""


@experiment.command()
@click.option(
    "--definition", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Experiment YAML."
)
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Events (CSV or Parquet): the event schema with experiment_id, variant, algorithm, position, request_id as columns.",
)
@click.option(
    "--tracks",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Catalog (Parquet/CSV with track_id and audio features) for the drift section.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for summary.json and report.html.",
)
def analyze(definition: Path, events: Path, tracks: Path | None, out: Path) -> None:
    """Write summary.json (strict JSON) and report.html for an experiment, analysed by its design (A/B:
    lifts, guardrails, ranking quality per complete served list; interleaving: per-user preference with
    the sign test); prints the verdict as one JSON line. Lists that are not complete are left out of what
    needs them and named; only a log in which nothing can be measured is an error."""
    import pandas as pd
    from pydantic import ValidationError

    from experiments.analysis import analyse
    from experiments.definition import Experiment
    from experiments.ranking_quality import ServedListError
    from experiments.report import served_tracks, write_report

    try:
        spec = Experiment.from_yaml(definition)
    except ValidationError as exc:
        raise click.ClickException(f"{definition}: {exc}") from exc
    frame = _read(events)
    missing = {"user_id", "track_id", "type", "timestamp", "experiment_id", "variant"} - set(frame.columns)
    if missing:
        raise click.ClickException(f"{events}: missing columns {', '.join(sorted(missing))}")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    for column in ("event_id", "ms_played", "rating", "position", "request_id", "algorithm", "model_version"):
        if column not in frame:
            frame[column] = None
    if frame["event_id"].isna().all():
        frame["event_id"] = [f"row-{i}" for i in range(len(frame))]
    catalog = _read(tracks) if tracks else None
    try:
        result = analyse(spec, frame)
        summary, report = write_report(result, served_tracks(frame, spec, catalog), out)
    except ServedListError as exc:
        raise click.ClickException(f"{events}: {exc}") from exc
    click.echo(
        json.dumps(
            {
                "experiment": spec.id,
                "verdict": result["verdict"],
                "reasons": result["reasons"],
                "summary": str(summary),
                "report": str(report),
            }
        )
    )


def _read(path: Path):
    import pandas as pd

    if path.suffix.lower() in {".parquet", ".pq"}:
        from core.storage import read_frame  # an events file of the offline store may be encrypted

        return read_frame(path)
    if path.suffix.lower() in {".csv", ".txt"}:
        return pd.read_csv(path)
    raise click.ClickException(f"{path}: use .csv or .parquet")


COMMANDS = [experiment]
