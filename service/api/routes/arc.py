"""POST /v1/arc/solve; ARC test-time adaptation jobs: POST /v1/arc/tasks, GET and DELETE /v1/arc/tasks/{id}."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import ApiKeyDep, ArrivalDep, MetricsDep, ReadyDep, RegistryDep, SettingsDep
from service.api.middleware import PROBLEM_JSON, problem_body
from service.api.schemas import PROBLEM_RESPONSES, ArcBatchResponse, ArcSolveRequest, ArcSolveResult, ArcTaskJson
from service.tasks.adapt import AdaptJobs, AdaptQueueFull, JobNotFound
from service.tasks.arc import solve_arc
from trm_core.tasks import arc as arc_codec

router = APIRouter(prefix="/v1/arc", tags=["arc"], dependencies=[ApiKeyDep, ReadyDep])


async def adapt_jobs(request: Request) -> AdaptJobs:
    """The app's adaptation jobs, created on first use (on the event loop, so exactly once); saved rows
    (TRM_ADAPT_DIR) are installed then, off the loop, before any ARC task is matched."""
    state = request.app.state
    jobs = getattr(state, "adapt", None)
    if jobs is None:
        jobs = state.adapt = AdaptJobs(state.settings, state.registry, state.metrics)
        state.adapt_restored = asyncio.ensure_future(asyncio.to_thread(jobs.restore))
    await asyncio.shield(state.adapt_restored)
    return jobs


@router.post("/solve", response_model=ArcSolveResult | ArcBatchResponse, response_model_exclude_unset=True,
             responses=PROBLEM_RESPONSES)
async def solve_arc_task(body: ArcSolveRequest, registry: RegistryDep, settings: SettingsDep,
                         metrics: MetricsDep, request: Request, t0: ArrivalDep) -> Any:
    """Answer one ARC task (`task`) or a batch (`tasks`) with two attempts per test input.

    The task must be one the model was trained on or adapted to (matched by content; an unseen task
    gets a 422 pointing to POST /v1/arc/tasks); every augmented version of each test input runs as
    a row and the answers are voted (votes, then confidence). `valid` is always null: ARC has no
    rule check, so correctness is unknown without the solution (unset fields such as `trajectory`
    are left out, but `valid` is sent).
    """
    await adapt_jobs(request)
    return await solve_arc(body, body.task, body.tasks, registry, settings, metrics, request, t0)


class ArcAdaptRequest(BaseModel):
    """POST /v1/arc/tasks: adapt a model to a task it was not trained on."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    task: ArcTaskJson
    model: str | None = Field(None, description="ARC model name (GET /v1/models); default: the ARC default")
    max_steps: int | None = Field(None, ge=1, description="training steps; default and cap TRM_ADAPT_MAX_STEPS")
    max_seconds: float | None = Field(None, gt=0, description="training wall time; default and cap TRM_ADAPT_MAX_S")


class AdaptProgressOut(BaseModel):
    step: int
    max_steps: int
    elapsed_s: float
    loss: float = Field(description="training loss per row at this step (falls as the rows learn the task)")


class ArcAdaptJob(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    fingerprint: str = Field(description="the task's content fingerprint (what /v1/arc/solve matches)")
    cached: bool = Field(description="the model already answered this task: nothing was trained")
    created: float
    started: float | None
    finished: float | None
    max_steps: int
    max_seconds: float
    progress: AdaptProgressOut | None
    error: str | None
    heldout_accuracy: float | None = Field(description="after adaptation: fraction of versions whose answer to "
                                                       "the held-out demonstration pair is exactly right")
    heldout_accuracy_before: float | None = Field(description="the same before adaptation (rows at the table mean)")
    heldout_pass2: float | None = Field(description="1 when the held-out output is among the two voted attempts")
    heldout_pass2_before: float | None
    steps: int | None
    seconds: float | None
    stopped: Literal["steps", "time", "cancelled"] | None = Field(description="which budget ended the training")
    loss_first: float | None
    loss_last: float | None
    num_versions: int | None
    attempts: list[list[list[list[int]]]] | None = Field(
        description="when succeeded: [[attempt 1, attempt 2] per test input], voted over the versions")
    votes: list[list[int]] | None


def _problem(status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
             loc: list[str | int] | None = None) -> JSONResponse:
    errors = [{"loc": loc, "msg": detail}] if loc else None
    return JSONResponse(problem_body(status, slug, title, detail, errors), status_code=status,
                        media_type=PROBLEM_JSON, headers=headers)


def _job_response(job: Any, status: int) -> JSONResponse:
    return JSONResponse(ArcAdaptJob(**job.to_json()).model_dump(), status_code=status,
                        headers={"Location": f"/v1/arc/tasks/{job.id}"})


@router.post("/tasks", status_code=202, response_model=ArcAdaptJob,
             responses={**PROBLEM_RESPONSES, 200: {"model": ArcAdaptJob, "description": "the model already answers "
                                                   "this task (or a job for it is under way): no new job"}})
async def create_adapt_job(body: ArcAdaptRequest, registry: RegistryDep, request: Request) -> Any:
    """Start adapting a model to an ARC task it has never seen (202 + `Location` of the job).

    The job trains puzzle rows for the task's augmented versions on its demonstration pairs (one pair
    held out to measure it), then answers the test inputs; once it succeeded, POST /v1/arc/solve
    answers the same task at once. 429 + Retry-After when the model's job queue is full.
    """
    jobs = await adapt_jobs(request)
    if importlib.util.find_spec("training") is None:
        return _problem(501, "adapt-unavailable", "Adaptation unavailable",
                        "this install has no 'training' package, which adaptation trains with; install trm-serve "
                        "from a source checkout (the Dockerfile's image includes it)")
    served = registry.get("arc", body.model)
    task = arc_codec.parse_task(body.task, loc=("body", "task"), max_size=served.grid_shape[0])
    try:
        job, is_new = await asyncio.to_thread(jobs.submit, served, task, max_steps=body.max_steps,
                                              max_seconds=body.max_seconds)
    except AdaptQueueFull as e:
        return _problem(429, "adapt-queue-full", "Adaptation queue full", f"{e}; retry in about {e.retry_after_s}s",
                        headers={"Retry-After": str(e.retry_after_s)})
    return _job_response(job, 202 if is_new else 200)


@router.get("/tasks/{job_id}", response_model=ArcAdaptJob, responses=PROBLEM_RESPONSES)
async def get_adapt_job(job_id: str, request: Request) -> Any:
    """A job's state, progress, held-out accuracy, and attempts once it succeeded."""
    jobs = await adapt_jobs(request)
    try:
        return _job_response(jobs.get(job_id), 200)
    except JobNotFound as e:
        return _problem(404, "unknown-job", "Unknown job", str(e))


@router.delete("/tasks/{job_id}", response_model=ArcAdaptJob, responses=PROBLEM_RESPONSES)
async def cancel_adapt_job(job_id: str, request: Request) -> Any:
    """Cancel a job: queued ones at once, running ones before their next training step (state becomes
    `cancelled` shortly after; nothing is installed). A finished job is returned unchanged."""
    jobs = await adapt_jobs(request)
    try:
        return _job_response(jobs.cancel(job_id), 200)
    except JobNotFound as e:
        return _problem(404, "unknown-job", "Unknown job", str(e))
