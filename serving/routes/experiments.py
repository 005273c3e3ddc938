from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from core.storage import StoragePath, is_remote
from experiments.definition import Experiment
from experiments.store import ExperimentConflict, ExperimentStore
from serving.deps import AdminKey, ClientKey, StateDep
from serving.errors import ApiError, error_details, validation_error
from serving.schemas import ErrorResponse

router = APIRouter(prefix="/experiments", tags=["experiments"])
ExperimentId = Annotated[
    str, Path(description="Experiment id: lowercase letters, digits, _ or -.", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
]
ERRORS = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


def _with_store(state, method: str, *args):
    # the store is a small synchronous helper (admin calls are rare): the app's synchronous client, in a thread
    return getattr(ExperimentStore(state.sync_redis, state.keys), method)(*args)


async def _call(state, method: str, *args):
    try:
        result = await asyncio.to_thread(_with_store, state, method, *args)
    except ExperimentConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except KeyError as exc:
        raise ApiError(404, "not_found", str(exc).strip("'\"")) from exc
    except ValueError as exc:  # a status move that is not allowed
        raise ApiError(422, "invalid_status_change", str(exc)) from exc
    if method in ("put", "set_status"):
        state.experiments.expire()  # the admin's next request through this process is already served by the change
    return result


@router.get("", response_model=list[Experiment], responses=ERRORS)
async def list_experiments(state: StateDep, key: ClientKey) -> list[Experiment]:
    """Every registered experiment with its status."""
    return await _call(state, "all")


@router.post("", status_code=201, response_model=Experiment, responses=ERRORS)
async def create_experiment(request: Request, state: StateDep, key: AdminKey) -> Experiment:
    """Register an experiment (status draft unless given): weights must sum to 1, algorithms must
    exist, and a running experiment may not overlap another on the same surface."""
    try:
        experiment = Experiment.model_validate(json.loads(await request.body() or b"null"))
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_json", f"body is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise validation_error(error_details(exc.errors(), default_field="experiment")) from exc
    return await _call(state, "put", experiment)


@router.post("/{experiment_id}/start", response_model=Experiment, responses=ERRORS)
async def start_experiment(experiment_id: ExperimentId, state: StateDep, key: AdminKey) -> Experiment:
    """Start assigning users (refused if it would overlap a running experiment on its surface)."""
    return await _call(state, "set_status", experiment_id, "running")


@router.post("/{experiment_id}/stop", response_model=Experiment, responses=ERRORS)
async def stop_experiment(experiment_id: ExperimentId, state: StateDep, key: AdminKey) -> Experiment:
    """Stop assigning users: everyone gets the default again."""
    return await _call(state, "set_status", experiment_id, "stopped")


@router.get("/{experiment_id}/report", response_class=HTMLResponse, responses=ERRORS)
async def experiment_report(experiment_id: ExperimentId, state: StateDep, key: ClientKey) -> HTMLResponse:
    """The latest report (verdict first, then Evidently's comparison), as written by the pipeline."""
    page = await asyncio.to_thread(_report_file, state.settings.layout.reports, experiment_id, "report.html")
    if page is None:
        raise ApiError(
            404,
            "not_found",
            f"no report for experiment {experiment_id!r} yet: the pipeline writes it (echotune pipeline)",
        )
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data: blob:"})


@router.get("/{experiment_id}/summary", responses=ERRORS)
async def experiment_summary(experiment_id: ExperimentId, state: StateDep, key: ClientKey) -> dict:
    """The latest analysis as JSON: verdict, reasons, sample ratio, comparisons, guardrails, power."""
    summary = await asyncio.to_thread(_report_file, state.settings.layout.reports, experiment_id, "summary.json")
    if summary is None:
        raise ApiError(404, "not_found", f"no analysis for experiment {experiment_id!r} yet")
    return json.loads(summary)


def _report_file(reports: StoragePath, experiment_id: str, name: str) -> str | None:
    """The text of one report file the pipeline wrote (on this host or in shared storage), or None.
    A local file must really lie in the reports folder (no symlink out of it)."""
    path = reports / experiment_id / name
    if not path.is_file() or (not is_remote(path) and path.resolve().parent.parent != reports.resolve()):
        return None
    return path.read_text()
