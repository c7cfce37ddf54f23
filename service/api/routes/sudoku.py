"""POST /v1/sudoku/solve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, ArrivalDep, DisconnectedDep, ReadyDep, SolveContextDep
from service.api.schemas import PROBLEM_RESPONSES, SudokuBatchResponse, SudokuSolveRequest, SudokuSolveResult
from service.tasks.grid import SUDOKU, solve_grid

router = APIRouter(prefix="/v1/sudoku", tags=["sudoku"], dependencies=[ApiKeyDep, ReadyDep])


@router.post("/solve", response_model=SudokuSolveResult | SudokuBatchResponse, response_model_exclude_none=True,
             responses=PROBLEM_RESPONSES)
async def solve_sudoku(body: SudokuSolveRequest, ctx: SolveContextDep, t0: ArrivalDep,
                       disconnected: DisconnectedDep) -> Any:
    """Solve one Sudoku (`puzzle`) or a batch (`puzzles`, answered in order).

    A puzzle is an 81-character string ('.' or '0' blank) or 9 rows of 9 ints. The answer says
    whether it passed the rule check (`valid`, `violations`), the step it halted at and why.
    """
    return await solve_grid(ctx, SUDOKU, body.options(), body.items(), t0=t0, disconnected=disconnected)
