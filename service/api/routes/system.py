"""GET /v1/models, /healthz, /readyz, /metrics: what is served and whether it can take requests.

/healthz, /readyz and /metrics never need the API key (probes and scrapers have none).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import ApiKeyDep, MetricsDep, RegistryDep
from service.api.schemas import PROBLEM_RESPONSES, Health, ModelInfo, ModelsResponse, RecipeOut
from service.metrics import CONTENT_TYPE_LATEST
from service.tasks.errors import ServiceUnavailable

router = APIRouter(tags=["system"])


@router.get("/v1/models", response_model=ModelsResponse, dependencies=[ApiKeyDep],
            responses={401: PROBLEM_RESPONSES[401]})
async def list_models(registry: RegistryDep) -> ModelsResponse:
    """The served models: name, task, whether it is the task's default, size, slots and the model card's
    recipe."""
    return ModelsResponse(models=[
        ModelInfo(name=m.name, task=m.task, is_default=m.is_default, num_params=m.model.num_trainable_params(),
                  halt_max_steps=m.config.halt_max_steps, grid=list(m.grid_shape), num_slots=m.scheduler.num_slots,
                  device=str(m.model.device), num_arc_tasks=len(m.arc_tasks) if m.task == "arc" else None,
                  train=m.meta.get("train") if isinstance(m.meta.get("train"), dict) else {},
                  cuda_graphs=m.engine.runner.graph_report(),
                  recipe=RecipeOut(**m.recipe.to_dict()) if m.recipe is not None else None)
        for m in registry.models.values()])


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
