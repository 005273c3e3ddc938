"""The FastAPI application: built here, everything else lives in routes and the use-case modules."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from echotune.contracts.events import FeedbackEvent
from echotune.settings import Settings, get_settings
from serving import errors
from serving.routes import feedback, health, recommendations
from serving.schemas import API_VERSION
from serving.state import AppState


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.echotune = await AppState.open(settings)
        yield
        await app.state.echotune.close()

    app = FastAPI(
        title="EchoTune",
        version=API_VERSION,
        description="Live music recommendations and listening feedback.",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.middleware("http")
    async def api_version_header(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-API-Version"] = API_VERSION
        return response

    for module in (recommendations, feedback, health):
        app.include_router(module.router)
    _document_event_schema(app)
    return app


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
