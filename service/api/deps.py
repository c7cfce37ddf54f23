"""Request dependencies as `Annotated` aliases: handlers declare what they need by type.

Failures raise inside the dependency (503 when not ready) and service/api/errors.py maps them. The
API key is checked by ApiKeyMiddleware before the body is read; `ApiKeyDep` only declares the bearer
scheme in the OpenAPI document of the routes behind it.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks.errors import ServiceUnavailable
from service.tasks.options import SolveContext
from service.tasks.submit import Disconnected


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_solve_context(request: Request) -> SolveContext:
    return request.app.state.solve_context


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SolveContextDep = Annotated[SolveContext, Depends(get_solve_context)]

_bearer = HTTPBearer(auto_error=False, description="TRM_API_KEY, when the server sets one")


def api_key_scheme(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Documents `Authorization: Bearer <TRM_API_KEY>`; ApiKeyMiddleware has already checked it."""


def check_ready(registry: RegistryDep) -> None:
    if not registry.is_ready:
        raise ServiceUnavailable("the service is " + ("shutting down" if registry.is_draining else
                                                      "still loading its models"))


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so only http.disconnect is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def disconnected(request: Request) -> Disconnected:
    """The request's `Disconnected` for the task layer: an awaitable that completes when the client leaves."""
    return lambda: _until_disconnect(request)


def arrival_time(request: Request) -> float:
    """When the request arrived (stamped by RequestMetricsMiddleware), else now."""
    return request.scope.get("state", {}).get("trm_t0") or time.monotonic()


ApiKeyDep = Depends(api_key_scheme)
ReadyDep = Depends(check_ready)
ArrivalDep = Annotated[float, Depends(arrival_time)]
DisconnectedDep = Annotated[Disconnected, Depends(disconnected)]
