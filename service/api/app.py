"""The FastAPI app: factory, lifespan, and the one place exceptions become problem+json.

`create_app(settings)` builds a fresh app (no module-level state, so tests build their own). The
lifespan loads and warms up the models (unless the CLI already did), starts one worker thread per
model, flips readiness, and on shutdown drains: new requests get 503 while queued and running
ones finish (up to TRM_DRAIN_TIMEOUT_S), then the workers stop. Under `trm serve` the drain runs
earlier, on SIGTERM while the port is still open (`app.state.drain`, service/api/lifecycle.py), and the
lifespan only stops what is left.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.deps import AuthError
from service.api.lifecycle import DrainPlan, drain_for_exit
from service.api.middleware import (
    PROBLEM_JSON,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    RequestMetricsMiddleware,
    ServerGuard,
    ServerGuardMiddleware,
    problem_body,
)
from service.api.routes import arc, maze, page, stats, sudoku, system
from service.engine.device import is_cpu_fallback
from service.engine.estimate import DeadlineUnmeetable
from service.engine.loop import WorkerClosedError
from service.engine.scheduler import QueueFullError
from service.metrics import Metrics
from service.registry import ModelRegistry, UnknownModelError
from service.settings import Settings
from service.tasks.submit import ClientGone, DeadlineExceeded, InvalidOptionsError, ServiceUnavailable
from trm_core.checkpoint import file_sha256
from trm_core.tasks import TaskInputError

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def _problem(status: int, slug: str, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, slug, title, detail, errors), status_code=status,
                        media_type=PROBLEM_JSON, headers=headers)


def _malformed(why: str) -> JSONResponse:
    """400 for every body that cannot be parsed as JSON (malformed, not UTF-8, too deep, too long an int):
    one status and one `type` for all of them; 422 is for JSON that parses but is not a valid request."""
    return _problem(400, "malformed-body", "Malformed body", f"the request body is not parseable JSON: {why}")


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path templates that match `path`."""
    methods: set[str] = set()
    for template, ops in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)), path):
            methods.update(m.upper() for m in ops)
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    """Our exceptions -> RFC 9457 problem+json, each with a stable `type` and a specific detail."""

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return _malformed("it is not valid JSON")
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return _problem(422, "invalid-request", "Invalid request", detail, errors)

    @app.exception_handler(TaskInputError)
    async def _invalid_puzzle(request: Request, exc: TaskInputError) -> JSONResponse:
        errors = [{"loc": list(loc), "msg": msg} for loc, msg in exc.errors]
        return _problem(422, "invalid-puzzle", "Invalid puzzle", str(exc), errors)

    @app.exception_handler(InvalidOptionsError)
    async def _invalid_option(request: Request, exc: InvalidOptionsError) -> JSONResponse:
        return _problem(422, "invalid-option", "Invalid option", exc.msg, [{"loc": list(exc.loc), "msg": exc.msg}])

    @app.exception_handler(AuthError)
    async def _unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        return _problem(401, "unauthorized", "Unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(UnknownModelError)
    async def _unknown_model(request: Request, exc: UnknownModelError) -> JSONResponse:
        return _problem(404, "unknown-model", "Unknown model", str(exc),
                        [{"loc": ["body", "model"], "msg": str(exc)}] if exc.name is not None else [])

    @app.exception_handler(QueueFullError)
    async def _queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        retry = getattr(exc, "retry_after_s", 1)
        return _problem(429, "queue-full", "Queue full", f"{exc}; retry in about {retry}s",
                        headers={"Retry-After": str(retry)})

    @app.exception_handler(DeadlineUnmeetable)
    async def _shed(request: Request, exc: DeadlineUnmeetable) -> JSONResponse:
        request.app.state.metrics.observe_shed(exc.model, exc.task, exc.num_rows)
        return _problem(429, "deadline-unmeetable", "Deadline cannot be met", str(exc),
                        headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(ServiceUnavailable)
    @app.exception_handler(WorkerClosedError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        return _problem(503, "unavailable", "Service unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        timeout = request.app.state.settings.request_timeout_s
        partial = getattr(exc, "partial", None)  # a batch: [(loc, result or None)] (service/tasks/grid.py)
        if not partial:
            return _problem(504, "deadline", "Deadline exceeded",
                            f"the request did not finish within {timeout}s (TRM_REQUEST_TIMEOUT_S); its rows were "
                            "cancelled; lower max_steps or send smaller batches")
        missed = [loc for loc, result in partial if result is None]
        body = problem_body(504, "deadline", "Deadline exceeded",
                            f"{len(missed)} of {len(partial)} puzzles did not finish within {timeout}s "
                            "(TRM_REQUEST_TIMEOUT_S) and were cancelled; `results` holds the answers of the others "
                            "in request order (null where missed): resend only the puzzles named in `errors`",
                            [{"loc": list(loc), "msg": "did not finish before the deadline"} for loc in missed])
        body["results"] = [result for _, result in partial]  # an RFC 9457 extension member
        return JSONResponse(body, status_code=504, media_type=PROBLEM_JSON)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        return _problem(499, "client-closed", "Client closed request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's json.loads
            cause = exc.__cause__
            return _malformed("it is not UTF-8" if isinstance(cause, UnicodeDecodeError) else
                              "it is nested too deeply" if isinstance(cause, RecursionError) else
                              f"{cause}" if cause is not None else "it cannot be parsed")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:  # Allow: every documented method on this path, not only the first route's
            allowed = _allowed_methods(request.app, request.url.path) or [
                m.strip() for m in (headers or {}).get("Allow", "").split(",") if m.strip()]
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return _problem(exc.status_code, f"http-{exc.status_code}", detail, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem(500, "internal", "Internal server error",
                        f"{type(exc).__name__} while handling the request; the server log has the traceback")


PROBES = ("/healthz", "/readyz", "/metrics")


def _openapi_matching_behaviour(app: FastAPI, settings: Settings) -> None:
    """Adjust the generated OpenAPI document to what the server really does with these settings.

    Without TRM_API_KEY no route asks for a key: the bearer scheme and the 401 responses go. Every
    route but the probes can answer 503 (over TRM_MAX_CONNECTIONS, draining); every route with a
    body can answer 400, 408 and 413 (the middleware's answers, before any route runs).
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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the app. `registry` may be pre-loaded (the CLI loads before binding the port)."""
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else ModelRegistry(settings)
    metrics = Metrics(settings.max_steps_limit)
    metrics.watch_schedulers(registry.scheduler_stats)
    metrics.watch_device(lambda: [(m.name, m.engine.runner.graph_report()) for m in registry.models.values()],
                         lambda: registry.device is not None and is_cpu_fallback(settings.device, registry.device))
    guard = ServerGuard(max_connections=settings.max_connections)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not registry.is_loaded:
            await asyncio.to_thread(registry.load)  # blocking torch work, off the event loop
        for m in registry.models.values():
            sha256 = await asyncio.to_thread(file_sha256, m.path)
            metrics.model_info.labels(m.name).info({
                "task": m.task, "device": str(m.model.device), "num_params": str(m.model.num_trainable_params()),
                "halt_max_steps": str(m.config.halt_max_steps), "num_slots": str(m.scheduler.num_slots),
                "batching": m.scheduler.batching, "is_default": str(m.is_default).lower(), "sha256": sha256})
        for m in registry.models.values():
            m.on_finish = lambda r, m=m: metrics.observe_finish(m.name, m.task, r)
        registry.start(on_step=lambda m, report: metrics.observe_step(m.name, m.task, report))
        metrics.ready.set(1)
        logger.info("ready: %s", ", ".join(f"{m.name} ({m.task})" for m in registry.models.values()))
        try:
            yield
        finally:
            metrics.ready.set(0)
            if getattr(app.state, "adapt", None) is not None:  # ARC adaptation jobs stop before their next step
                # after a SIGTERM drain they were told to stop within its budget: do not wait again
                await asyncio.to_thread(app.state.adapt.close,
                                        settings.drain_timeout_s if app.state.drained is None else 0.0)
            if app.state.drained is None:  # no SIGTERM drain ran (another ASGI server, tests)
                logger.info("draining (up to %.1fs)", settings.drain_timeout_s)
                guard.is_draining = True
                is_clean = await asyncio.to_thread(registry.drain, settings.drain_timeout_s)
                logger.info("drained %s", "cleanly" if is_clean else "with aborted requests")

    async def drain() -> bool:
        """The SIGTERM drain, run while the server still listens (service/api/server.py calls it)."""
        metrics.ready.set(0)
        plan = DrainPlan.from_settings(settings)
        steps = [drain_for_exit(registry, guard, plan)]
        if getattr(app.state, "adapt", None) is not None:  # adaptation jobs stop within the same budget
            steps.append(asyncio.to_thread(app.state.adapt.close, plan.rows_s))
        app.state.drained = (await asyncio.gather(*steps))[0]
        return app.state.drained

    app = FastAPI(
        title="trm-serve",
        version="1",
        description="Tiny Recursive Models over HTTP: Sudoku, Maze and ARC, batched at ACT-step granularity.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.registry, app.state.metrics = settings, registry, metrics
    app.state.guard, app.state.drain, app.state.drained = guard, drain, None
    _install_error_handlers(app)
    _openapi_matching_behaviour(app, settings)
    for router in (sudoku.router, maze.router, arc.router, system.router, stats.router, page.router):
        app.include_router(router)
    # Added innermost first: metrics sees every response (401, 413 and CORS preflights included);
    # the key is checked before the body is read; CORS headers go on 401s too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(ServerGuardMiddleware, guard=guard)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
