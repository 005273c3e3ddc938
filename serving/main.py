"""The FastAPI application: built here, everything else lives in routes and the use-case modules."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.events import FeedbackEvent
from core.settings import Settings, get_settings
from serving import errors
from serving.feedback import replay_spool_forever
from serving.middleware import RequestContext
from serving.observability import configure_logging
from serving.routes import admin, experiments, feedback, health, recommendations
from serving.schemas import API_VERSION
from serving.state import AppState, flush_exposures_forever


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    """The API for ``settings``; ``clock`` is the time it reads (rate-limit windows, the Redis breaker's
    cooldown), injected by tests."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await AppState.open(settings, clock)
        app.state.echotune = state
        tasks = [asyncio.create_task(replay_spool_forever(state)), asyncio.create_task(flush_exposures_forever(state))]
        yield
        for task in tasks:
            task.cancel()
        await state.flush_exposures()  # the last lists served before shutdown
        await state.close()

    app = FastAPI(
        title="EchoTune",
        version=API_VERSION,
        description="Live music recommendations and listening feedback. Every route but /health and /metrics "
        "needs an X-API-Key header.",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (recommendations, feedback, health, admin, experiments):
        app.include_router(module.router)
    if settings.cors_origins:
        origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, log_requests=settings.access_log)
    _document_event_schema(app)
    return app


def create_production_app() -> FastAPI:
    """What ``echotune serve`` runs: JSON logs on stderr, then the app."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def _document_event_schema(app: FastAPI) -> None:
    """Add FeedbackEvent to the OpenAPI components (the feedback body schema refers to it)."""
    original = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        defs = FeedbackEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["FeedbackEvent"] = defs
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
