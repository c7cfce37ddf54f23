"""POST /v1/maze/solve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, ArrivalDep, DisconnectedDep, ReadyDep, SolveContextDep
from service.api.schemas import PROBLEM_RESPONSES, MazeBatchResponse, MazeSolveRequest, MazeSolveResult
from service.tasks.grid import MAZE, solve_grid

router = APIRouter(prefix="/v1/maze", tags=["maze"], dependencies=[ApiKeyDep, ReadyDep])


@router.post("/solve", response_model=MazeSolveResult | MazeBatchResponse, response_model_exclude_none=True,
             responses=PROBLEM_RESPONSES)
async def solve_maze(body: MazeSolveRequest, ctx: SolveContextDep, t0: ArrivalDep,
                     disconnected: DisconnectedDep) -> Any:
    """Solve one maze (`puzzle`) or a batch (`puzzles`, answered in order).

    A maze is a list of row strings over '#' wall, ' ' open, 'S' start, 'G' goal, of the model's
    size (30x30 for Maze-Hard). The answer marks the path 'o' and says whether it is a valid
    start-to-goal route (`valid`, `violations`), the step it halted at and why.
    """
    return await solve_grid(ctx, MAZE, body.options(), body.items(), t0=t0, disconnected=disconnected)
