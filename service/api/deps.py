"""Request dependencies as `Annotated` aliases: handlers declare what they need by type.

Failures raise inside the dependency (401 for the key, 503 when not ready) and app.py maps them.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings
from service.tasks.submit import ServiceUnavailable


class AuthError(PermissionError):
    """Missing or wrong API key (HTTP 401)."""


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False, description="TRM_API_KEY, when the server sets one")


def check_api_key(settings: SettingsDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Require `Authorization: Bearer <TRM_API_KEY>` when a key is configured (constant-time compare)."""
    key = settings.api_key
    if key is None:
        return
    if credentials is None:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(credentials.credentials.encode(), key.get_secret_value().encode()):
        raise AuthError("wrong API key")


def check_ready(registry: RegistryDep) -> None:
    if not registry.is_ready:
        raise ServiceUnavailable("the service is " + ("shutting down" if registry.is_draining else
                                                      "still loading its models"))


def arrival_time(request: Request) -> float:
    """When the request arrived (stamped by RequestMetricsMiddleware), else now."""
    return request.scope.get("state", {}).get("trm_t0") or time.monotonic()


ApiKeyDep = Depends(check_api_key)
ReadyDep = Depends(check_ready)
ArrivalDep = Annotated[float, Depends(arrival_time)]
