"""GET /healthz, /readyz, /metrics: whether the service can take requests (GET /v1/models: routes/models.py).

/healthz, /readyz and /metrics never need the API key (probes and scrapers have none).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep, RegistryDep
from service.api.schemas import PROBLEM_RESPONSES, Health
from service.metrics import CONTENT_TYPE_LATEST
from service.tasks.errors import ServiceUnavailable

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: PROBLEM_RESPONSES[503]})
async def readyz(registry: RegistryDep) -> Health:
    """Readiness: every model loaded and warmed up, workers running, not draining."""
    if not registry.is_ready:
        raise ServiceUnavailable("not ready: " + ("shutting down" if registry.is_draining else "loading models"))
    return Health(status="ready", models={
        name: {"waiting": s.num_waiting, "running": s.num_running, "slots": s.num_slots}
        for name, s in registry.scheduler_stats()})


@router.get("/metrics", response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus exposition of the service's metrics."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
