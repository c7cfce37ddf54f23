"""POST /v1/arc/solve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..arc import solve_arc
from ..deps import ApiKeyDep, ArrivalDep, MetricsDep, ReadyDep, RegistryDep, SettingsDep
from ..schemas import PROBLEM_RESPONSES, ArcBatchResponse, ArcSolveRequest, ArcSolveResult

router = APIRouter(prefix="/v1/arc", tags=["arc"], dependencies=[ApiKeyDep, ReadyDep])


@router.post("/solve", response_model=ArcSolveResult | ArcBatchResponse, response_model_exclude_unset=True,
             responses=PROBLEM_RESPONSES)
async def solve_arc_task(body: ArcSolveRequest, registry: RegistryDep, settings: SettingsDep,
                         metrics: MetricsDep, request: Request, t0: ArrivalDep) -> Any:
    """Answer one ARC task (`task`) or a batch (`tasks`) with two attempts per test input.

    The task must be one the model was trained on (matched by content); every augmented version
    of each test input runs as a row and the answers are voted (votes, then confidence). `valid` is
    always null: ARC has no rule check, so correctness is unknown without the solution (unset fields
    such as `trajectory` are left out, but `valid` is sent).
    """
    return await solve_arc(body, body.task, body.tasks, registry, settings, metrics, request, t0)
