"""GET /v1/models (what is served) and POST /v1/models/{name}/reload (new weights without downtime).

A reload re-reads the model's checkpoint from its configured path, checks it as start-up does (task,
codec shape, ARC table), warms it on one row, and swaps the weights in between two engine steps
(service/registry.py `ModelRegistry.reload`). Requests already running finish on the old weights or
the new ones; none fails. A file that cannot be served answers 422 (`ReloadFailed`), one of other
shapes 409 (`ReloadConflict`), and in both cases the old weights keep serving; service/api/errors.py
turns them into problem+json.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, MetricsDep, RegistryDep
from service.api.schemas import PROBLEM_RESPONSES, ModelInfo, ModelsResponse, RecipeOut, ReloadResponse
from service.metrics import Metrics
from service.registry import ServedModel, UnknownModelError
from service.tasks.errors import ServiceUnavailable

router = APIRouter(tags=["models"], dependencies=[ApiKeyDep])


def model_info(m: ServedModel) -> ModelInfo:
    """One model as GET /v1/models lists it (and a reload answers it)."""
    return ModelInfo(name=m.name, task=m.task, is_default=m.is_default, num_params=m.model.num_trainable_params(),
                     halt_max_steps=m.config.halt_max_steps, grid=list(m.grid_shape), num_slots=m.scheduler.num_slots,
                     device=str(m.model.device), num_arc_tasks=len(m.arc_tasks) if m.task == "arc" else None,
                     train=m.meta.get("train") if isinstance(m.meta.get("train"), dict) else {}, sha256=m.sha256,
                     cuda_graphs=m.engine.runner.graph_report(),
                     recipe=RecipeOut(**m.recipe.to_dict()) if m.recipe is not None else None)


def publish_model_info(metrics: Metrics, m: ServedModel) -> None:
    """The `trm_model_info` labels of one model (at start-up and after a reload)."""
    metrics.model_info.labels(m.name).info({
        "task": m.task, "device": str(m.model.device), "num_params": str(m.model.num_trainable_params()),
        "halt_max_steps": str(m.config.halt_max_steps), "num_slots": str(m.scheduler.num_slots),
        "batching": m.scheduler.batching, "is_default": str(m.is_default).lower(), "sha256": m.sha256 or ""})


@router.get("/v1/models", response_model=ModelsResponse, responses={401: PROBLEM_RESPONSES[401]})
async def list_models(registry: RegistryDep) -> ModelsResponse:
    """The served models: name, task, whether it is the task's default, size, slots, checksum, CUDA graphs
    and the model card's recipe."""
    return ModelsResponse(models=[model_info(m) for m in registry.models.values()])


@router.post("/v1/models/{name}/reload", response_model=ReloadResponse, responses={
    401: PROBLEM_RESPONSES[401], 404: PROBLEM_RESPONSES[404],
    409: {**PROBLEM_RESPONSES[422], "description": "the file holds a model of other shapes; the old one keeps serving"},
    422: {**PROBLEM_RESPONSES[422], "description": "the file cannot be served; the old model keeps serving"},
    503: PROBLEM_RESPONSES[503]})
async def reload_model(name: str, registry: RegistryDep, metrics: MetricsDep) -> ReloadResponse:
    """Re-read model `name`'s checkpoint from its configured path and serve it, without downtime."""
    served = registry.models.get(name)
    if served is None:
        raise UnknownModelError(None, name, sorted(registry.models))
    if not registry.is_ready:
        raise ServiceUnavailable("not ready or shutting down; nothing reloaded")
    previous = served.sha256
    served = await asyncio.to_thread(registry.reload, name)  # ReloadFailed 422, ReloadConflict 409
    publish_model_info(metrics, served)
    return ReloadResponse(model=model_info(served), previous_sha256=previous, changed=served.sha256 != previous)
