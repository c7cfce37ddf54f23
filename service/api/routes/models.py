"""GET /v1/models (what is served) and POST /v1/models/{name}/reload (new weights without downtime).

A reload re-reads the model's checkpoint from its configured path, checks it as start-up does (task,
codec shape, ARC table), warms it on one row, and swaps the weights in between two engine steps
(service/registry.py `ModelRegistry.reload`). Requests already running finish on the old weights or
the new ones; none fails. A file that cannot be served answers 422, one of other shapes 409, and in
both cases the old weights keep serving. Problems are answered here as problem+json.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ApiKeyDep, MetricsDep, RegistryDep
from service.api.middleware import PROBLEM_JSON, problem_body
from service.api.schemas import PROBLEM_RESPONSES, ModelInfo, ModelsResponse, ReloadResponse
from service.metrics import Metrics
from service.registry import RegistryError, ReloadConflict, ServedModel

router = APIRouter(tags=["models"], dependencies=[ApiKeyDep])


def model_info(m: ServedModel) -> ModelInfo:
    return ModelInfo(name=m.name, task=m.task, is_default=m.is_default, num_params=m.model.num_trainable_params(),
                     halt_max_steps=m.config.halt_max_steps, grid=list(m.grid_shape), num_slots=m.scheduler.num_slots,
                     device=str(m.model.device), num_arc_tasks=len(m.arc_tasks) if m.task == "arc" else None,
                     train=m.meta.get("train") if isinstance(m.meta.get("train"), dict) else {}, sha256=m.sha256)


def publish_model_info(metrics: Metrics, m: ServedModel) -> None:
    """The `trm_model_info` labels of one model (at start-up and after a reload)."""
    metrics.model_info.labels(m.name).info({
        "task": m.task, "device": str(m.model.device), "num_params": str(m.model.num_trainable_params()),
        "halt_max_steps": str(m.config.halt_max_steps), "num_slots": str(m.scheduler.num_slots),
        "batching": m.scheduler.batching, "is_default": str(m.is_default).lower(), "sha256": m.sha256 or ""})


@router.get("/v1/models", response_model=ModelsResponse, responses={401: PROBLEM_RESPONSES[401]})
async def list_models(registry: RegistryDep) -> ModelsResponse:
    """The served models: name, task, whether it is the task's default, size, slots and checksum."""
    return ModelsResponse(models=[model_info(m) for m in registry.models.values()])


def _problem(status: int, slug: str, title: str, detail: str) -> JSONResponse:
    return JSONResponse(problem_body(status, slug, title, detail), status_code=status, media_type=PROBLEM_JSON)


@router.post("/v1/models/{name}/reload", response_model=ReloadResponse, responses={
    401: PROBLEM_RESPONSES[401], 404: PROBLEM_RESPONSES[404],
    409: {**PROBLEM_RESPONSES[422], "description": "the file holds a model of other shapes; the old one keeps serving"},
    422: {**PROBLEM_RESPONSES[422], "description": "the file cannot be served; the old model keeps serving"},
    503: PROBLEM_RESPONSES[503]})
async def reload_model(name: str, registry: RegistryDep, metrics: MetricsDep) -> Any:
    """Re-read model `name`'s checkpoint from its configured path and serve it, without downtime."""
    served = registry.models.get(name)
    if served is None:
        return _problem(404, "unknown-model", "Unknown model",
                        f"no model named {name!r}; served: {', '.join(sorted(registry.models)) or 'none'}")
    if not registry.is_ready:
        return _problem(503, "unavailable", "Service unavailable", "not ready or shutting down; nothing reloaded")
    previous = served.sha256
    try:
        served = await asyncio.to_thread(registry.reload, name)
    except ReloadConflict as e:
        return _problem(409, "reload-conflict", "Checkpoint does not fit the running model", str(e))
    except (RegistryError, TimeoutError) as e:
        return _problem(422, "reload-failed", "Checkpoint cannot be served", f"{e}; the old weights keep serving")
    publish_model_info(metrics, served)
    return ReloadResponse(model=model_info(served), previous_sha256=previous, changed=served.sha256 != previous)
