"""The ``echotune`` command line: one entry point for the demo, the pipeline, the API and the worker.

Platform commands live here; command groups for other jobs live in sibling modules of this package
and are added to :func:`main` at the bottom. Heavy libraries (Dagster, MLflow, LightFM, FastAPI) are
imported inside the commands that need them, so ``echotune --help`` answers at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import click

from core.settings import Settings
from echotune.config import load_settings

# One BLAS thread per serving process: threaded BLAS inside a threaded server is ~60x slower.
_SINGLE_THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _use_dagster_home(settings: Settings) -> None:
    """Write the Dagster instance's config from the settings and point this process at it."""
    from pipelines.instance import prepare_instance

    try:
        os.environ.update(prepare_instance(settings))
    except (ConnectionError, PermissionError) as exc:  # the database of ECHOTUNE_DATABASE_URL, with what to do
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """EchoTune: music recommendations with Dagster, MLflow, Redis and FastAPI."""


@main.command()
def pipeline() -> None:
    """Materialize every asset once on the configured data, then exit (non-zero on failure): live
    feedback drained, sources ingested, a model trained and published, drift measured, running
    experiments reported (the hyperparameter search runs only when launched from the Dagster UI)."""
    settings = load_settings()  # first: the pipeline's modules read the settings when imported
    from core.redis_server import redis_url

    try:
        from pipelines.definitions import SecretNotInEnvironment
        from pipelines.runner import materialize_everything
    except ValueError as exc:  # the code location refused the settings (a password not in the environment)
        raise click.ClickException(str(exc)) from None

    _use_dagster_home(settings)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines are about creating its own tables
    with redis_url(settings.redis_url, settings.layout.redis, settings.embedded_redis_maxmemory) as url:
        try:
            ok = materialize_everything(settings.model_copy(update={"redis_url": url}))
        except SecretNotInEnvironment as exc:
            raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default ECHOTUNE_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default ECHOTUNE_API_PORT).")
@click.option("--workers", type=int, default=None, help="Worker processes (default ECHOTUNE_API_WORKERS).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the recommendation API."""
    os.environ.update(_SINGLE_THREADED_BLAS)
    import uvicorn

    from core.redis_server import redis_url

    settings = load_settings()
    workers = workers or settings.api_workers
    if workers > 1:  # every worker writes its metrics where /metrics can add them up
        metrics_dir = settings.layout.prometheus
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into an exit so the embedded Redis
    # this command may have started is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with redis_url(settings.redis_url, settings.layout.redis, settings.embedded_redis_maxmemory) as url:
        os.environ["ECHOTUNE_REDIS_URL"] = url  # worker processes read their settings from the environment
        uvicorn.run(
            "serving.main:create_production_app",
            factory=True,
            host=host or settings.api_host,
            port=port or settings.api_port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )


@main.command()
@click.option("--batch", type=int, default=500, show_default=True, help="Stream entries read per round.")
@click.option("--consumer", default=None, help="Consumer name in the group (default host-pid).")
@click.option(
    "--claim-idle-ms",
    type=int,
    default=30_000,
    show_default=True,
    help="Take over entries another consumer has held unacknowledged this long (a crashed worker's).",
)
@click.option(
    "--latency-log",
    type=click.Path(path_type=Path),
    default=None,
    help="Append each applied event's accepted->applied latency (ms) to this file (benchmarks).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Port of this worker's Prometheus metrics (default ECHOTUNE_WORKER_METRICS_PORT; 0: off). One per worker on a host.",
)
def worker(
    batch: int, consumer: str | None, claim_idle_ms: int, latency_log: Path | None, metrics_port: int | None
) -> None:
    """Run the feedback processor: learn from the feedback stream until SIGTERM or Ctrl-C, serving its
    metrics (lag, pending, applied, heartbeat) at http://ECHOTUNE_API_HOST:<metrics port>/metrics."""
    os.environ.update(_SINGLE_THREADED_BLAS)
    import threading

    from core.contracts.redis_keys import RedisKeys
    from core.redis_server import redis_url
    from core.tables import OfflineStore
    from serving.observability import configure_logging
    from serving.worker import FeedbackWorker
    from serving.worker.connection import worker_client
    from serving.worker.metrics import serve_metrics

    settings = load_settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with redis_url(settings.redis_url, settings.layout.redis, settings.embedded_redis_maxmemory) as url:
        client = worker_client(
            url, cluster=settings.redis_cluster
        )  # timeouts, keepalive and health checks: a dead connection never hangs it
        feedback_worker = FeedbackWorker(
            client,
            RedisKeys(settings.redis_prefix),
            consumer=consumer,
            batch=batch,
            claim_idle_ms=claim_idle_ms,
            latency_log=latency_log,
            erasure_log=OfflineStore(settings.layout.tables).erasures,
        )
        port = settings.worker_metrics_port if metrics_port is None else metrics_port
        metrics_server = serve_metrics(feedback_worker.metrics.registry, settings.api_host, port)
        try:
            feedback_worker.run(stop)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()


@main.command()
def demo() -> None:
    """Generate the default data set, materialize every asset, then serve the API, the Dagster UI and
    the MLflow UI until Ctrl-C."""
    from echotune.demo import run_demo

    sys.exit(run_demo(load_settings()))


def _add_command_modules() -> None:
    """Sibling modules define their commands with ``@click.command``/``@click.group`` and list them in
    ``COMMANDS``; adding one is adding its module name here."""
    import importlib

    for name in ("ingest", "offline", "experiment", "model", "privacy", "feedback", "docs"):
        module = importlib.import_module(f"echotune.cli.{name}")
        for command in module.COMMANDS:
            main.add_command(command)


_add_command_modules()

if __name__ == "__main__":
    main()
