"""The FastAPI app: the factory, its lifespan and its drain.

`create_app(settings)` builds a fresh app (no module-level state, so tests build their own) and
creates every piece of state the routes use, in `app.state`: settings, registry, metrics, the
server guard, the task layer's `SolveContext` and the ARC adaptation jobs. The lifespan loads and
warms up the models (unless the CLI already did), restores saved ARC adaptations, starts one loop
thread per model, flips readiness, and on shutdown drains: new requests get 503 while queued and
running ones finish (up to TRM_DRAIN_TIMEOUT_S), then the threads stop. Under `trm serve` the drain
runs earlier, on SIGTERM while the port is still open (`app.state.drain`, service/api/lifecycle.py),
and the lifespan only stops what is left. Exceptions become problem+json in service/api/errors.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api.errors import install_error_handlers
from service.api.lifecycle import DrainPlan, drain_for_exit
from service.api.middleware import (
    PROBES,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    RequestMetricsMiddleware,
    ServerGuard,
    ServerGuardMiddleware,
)
from service.api.routes import arc, maze, models, page, stats, sudoku, system
from service.api.routes.models import publish_model_info
from service.api.schemas import forms_in_openapi
from service.engine.device import is_cpu_fallback
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks.adapt import AdaptJobs
from service.tasks.options import SolveContext

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def _publish_model_info(registry: ModelRegistry, metrics: Metrics) -> None:
    """trm_model_info per model, and the per-request metrics hooks of each model's engine."""
    for m in registry.models.values():
        publish_model_info(metrics, m)  # its sha256 follows reloads (routes/models.py)
        m.on_finish = lambda r, m=m: metrics.observe_finish(m.name, m.task, r)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings, registry, metrics = state.settings, state.registry, state.metrics
    if not registry.is_loaded:
        await asyncio.to_thread(registry.load)  # blocking torch work, off the event loop
    _publish_model_info(registry, metrics)
    await asyncio.to_thread(state.adapt.restore)  # saved ARC rows and jobs, before any task is matched
    # What is loaded now (torch, the models, the app) lives as long as the process: move it out of the
    # garbage collector's sight. A full collection otherwise walks all of it (~200,000 objects, a
    # quarter of a second on a busy CPU) on the event loop whenever a request allocates enough.
    gc.collect()
    gc.freeze()
    registry.start(on_step=lambda m, report: metrics.observe_step(m.name, m.task, report))
    metrics.ready.set(1)
    logger.info("ready: %s", ", ".join(f"{m.name} ({m.task})" for m in registry.models.values()))
    try:
        yield
    finally:
        metrics.ready.set(0)
        # ARC adaptation jobs stop before their next step; after a SIGTERM drain they were told to
        # stop within its budget: do not wait again
        await asyncio.to_thread(state.adapt.close, settings.drain_timeout_s if state.drained is None else 0.0)
        if state.drained is None:  # no SIGTERM drain ran (another ASGI server, tests)
            logger.info("draining (up to %.1fs)", settings.drain_timeout_s)
            state.guard.is_draining = True
            is_clean = await asyncio.to_thread(registry.drain, settings.drain_timeout_s)
            logger.info("drained %s", "cleanly" if is_clean else "with aborted requests")


def _drain_for(app: FastAPI) -> Callable[[], Awaitable[bool]]:
    """The SIGTERM drain, run while the server still listens (service/api/server.py calls it)."""
    state = app.state

    async def drain() -> bool:
        state.metrics.ready.set(0)
        plan = DrainPlan.from_settings(state.settings)
        rows_done, _ = await asyncio.gather(drain_for_exit(state.registry, state.guard, plan),
                                            asyncio.to_thread(state.adapt.close, plan.rows_s))
        state.drained = rows_done
        return rows_done

    return drain


def _openapi_matching_behaviour(app: FastAPI, settings: Settings) -> None:
    """Adjust the generated OpenAPI document to what the server really does with these settings.

    Without TRM_API_KEY no route asks for a key: the bearer scheme and the 401 responses go. Every
    route but the probes can answer 503 (over TRM_MAX_CONNECTIONS, draining); every route with a
    body can answer 400, 408 and 413 (the middleware's answers, before any route runs). Solve
    requests are `oneOf` their two named forms (service/api/schemas.py `forms_in_openapi`).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                if settings.api_key is None:
                    op.pop("security", None)
                    responses.pop("401", None)
                if path not in PROBES and path.startswith("/v1/"):
                    responses.setdefault("503", {"description": "too many connections or shutting down; see "
                                                                "Retry-After", "content": problem})
                if "requestBody" in op:
                    for status, text in (("400", "the body is not parseable JSON"),
                                         ("408", "the body did not arrive within TRM_BODY_TIMEOUT_S"),
                                         ("413", "request body too large")):
                        responses.setdefault(status, {"description": text, "content": problem})
        if settings.api_key is None:
            schema.get("components", {}).pop("securitySchemes", None)
        forms_in_openapi(schema.setdefault("components", {}).setdefault("schemas", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """Added innermost first: metrics sees every response (401, 413 and CORS preflights included);
    the key is checked before the body is read; CORS headers go on 401s too."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(ServerGuardMiddleware, guard=app.state.guard)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)


def create_app(settings: Settings | None = None, *, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the app. `registry` may be pre-loaded (the CLI loads before binding the port)."""
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else ModelRegistry(settings)
    metrics = Metrics(settings.max_steps_limit)
    metrics.watch_schedulers(registry.scheduler_stats)
    metrics.watch_device(lambda: [(m.name, m.engine.runner.graph_report()) for m in registry.models.values()],
                         lambda: registry.device is not None and is_cpu_fallback(settings.device, registry.device))
    app = FastAPI(
        title="trm-serve",
        version="1",
        description="Tiny Recursive Models over HTTP: Sudoku, Maze and ARC, batched at ACT-step granularity.",
        lifespan=_lifespan,
    )
    state = app.state
    state.settings, state.registry, state.metrics = settings, registry, metrics
    state.guard = ServerGuard(max_connections=settings.max_connections)
    state.solve_context = SolveContext(registry, settings, metrics)
    state.adapt = AdaptJobs(settings, registry, metrics)
    state.drain, state.drained = _drain_for(app), None
    install_error_handlers(app)
    _openapi_matching_behaviour(app, settings)
    for router in (sudoku.router, maze.router, arc.router, models.router, system.router, stats.router, page.router):
        app.include_router(router)
    _add_middleware(app, settings)
    return app
