"""POST /v1/arc/solve; ARC test-time adaptation jobs: POST /v1/arc/tasks, GET and DELETE /v1/arc/tasks/{id}."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.api.deps import ApiKeyDep, ArrivalDep, DisconnectedDep, ReadyDep, RegistryDep, SolveContextDep
from service.api.schemas import (
    PROBLEM_RESPONSES,
    ArcAdaptJob,
    ArcAdaptRequest,
    ArcBatchResponse,
    ArcSolveRequest,
    ArcSolveResult,
)
from service.tasks.adapt import AdaptJobs, Job
from service.tasks.arc import solve_arc
from service.tasks.errors import AdaptUnavailable
from trm_core.tasks import arc as arc_codec

router = APIRouter(prefix="/v1/arc", tags=["arc"], dependencies=[ApiKeyDep, ReadyDep])


def get_adapt_jobs(request: Request) -> AdaptJobs:
    """The app's adaptation jobs (created by the app factory; saved rows restored before ready)."""
    return request.app.state.adapt


AdaptJobsDep = Annotated[AdaptJobs, Depends(get_adapt_jobs)]


@router.post("/solve", response_model=ArcSolveResult | ArcBatchResponse, response_model_exclude_unset=True,
             responses=PROBLEM_RESPONSES)
async def solve_arc_task(body: ArcSolveRequest, ctx: SolveContextDep, t0: ArrivalDep,
                         disconnected: DisconnectedDep) -> Any:
    """Answer one ARC task (`task`) or a batch (`tasks`) with two attempts per test input.

    The task must be one the model was trained on or adapted to (matched by content; an unseen task
    gets a 422 pointing to POST /v1/arc/tasks); every augmented version of each test input runs as
    a row and the answers are voted (votes, then confidence). `valid` is always null: ARC has no
    rule check, so correctness is unknown without the solution (unset fields such as `trajectory`
    are left out, but `valid` is sent).
    """
    return await solve_arc(ctx, body.options(), body.items(), t0=t0, disconnected=disconnected)


# OpenAPI links: the job a POST created is what GET and DELETE take (clients and fuzzers follow them).
_JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for name, op in (
    ("GetJob", "get_adapt_job_v1_arc_tasks__job_id__get"),
    ("CancelJob", "cancel_adapt_job_v1_arc_tasks__job_id__delete"))}


def _job_response(job: Job, status: int) -> JSONResponse:
    return JSONResponse(ArcAdaptJob(**job.to_json()).model_dump(), status_code=status,
                        headers={"Location": f"/v1/arc/tasks/{job.id}"})


@router.post("/tasks", status_code=202, response_model=ArcAdaptJob,
             responses={**PROBLEM_RESPONSES, 202: {"links": _JOB_LINKS},
                        200: {"model": ArcAdaptJob, "links": _JOB_LINKS, "description": "the model already answers "
                              "this task (or a job for it is under way): no new job"}})
async def create_adapt_job(body: ArcAdaptRequest, registry: RegistryDep, jobs: AdaptJobsDep) -> Any:
    """Start adapting a model to an ARC task it has never seen (202 + `Location` of the job).

    The job trains puzzle rows for the task's augmented versions on its demonstration pairs (one pair
    held out to measure it), then answers the test inputs; once it succeeded, POST /v1/arc/solve
    answers the same task at once. 429 + Retry-After when the model's job queue is full.
    """
    if importlib.util.find_spec("training") is None:
        raise AdaptUnavailable("this install has no 'training' package, which adaptation trains with; install "
                               "trm-serve from a source checkout (the Dockerfile's image includes it)")
    served = registry.get("arc", body.model)
    task = arc_codec.parse_task(body.task, loc=("task",), max_size=served.grid_shape[0])
    job, is_new = await asyncio.to_thread(jobs.submit, served, task, max_steps=body.max_steps,
                                          max_seconds=body.max_seconds)
    return _job_response(job, 202 if is_new else 200)


@router.get("/tasks/{job_id}", response_model=ArcAdaptJob, responses=PROBLEM_RESPONSES)
async def get_adapt_job(job_id: str, jobs: AdaptJobsDep) -> Any:
    """A job's state, progress, held-out accuracy, and attempts once it succeeded."""
    return _job_response(jobs.get(job_id), 200)


@router.delete("/tasks/{job_id}", response_model=ArcAdaptJob, responses=PROBLEM_RESPONSES)
async def cancel_adapt_job(job_id: str, jobs: AdaptJobsDep) -> Any:
    """Cancel a job: queued ones at once, running ones before their next training step (state becomes
    `cancelled` shortly after; nothing is installed). A finished job is returned unchanged."""
    return _job_response(jobs.cancel(job_id), 200)
