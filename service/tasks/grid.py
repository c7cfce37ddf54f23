"""Sudoku and Maze requests: validate every puzzle, run one row each, build the answers.

Both tasks have the same shape (one grid in, one grid out, a rule check that decides correctness),
so one `GridTask` serves both; ARC, which votes over augmented versions, is in service/tasks/arc.py.
Validation is all-or-nothing: every puzzle of a batch is parsed before any row is queued, and all
problems are reported at once with their location in the request (`("puzzles", 3, 4, 7)`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from service.engine.rulecheck import TaskRule
from service.engine.scheduler import Request, RequestStatus
from service.metrics import Metrics
from service.registry import LoadedModel
from service.tasks.admission import check_capacity, validate
from service.tasks.errors import DeadlineExceeded, Loc
from service.tasks.options import Items, RequestOptions, SolveContext, resolve_options
from service.tasks.submit import Disconnected, RowSpec, run_rows
from trm_core.tasks import TaskInputError, maze, sudoku
from trm_core.tasks.arc_vote import sigmoid
from trm_core.tasks.views import views_for


def _no_extras(puzzle: Any, solution: Any, is_valid: bool) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class GridTask:
    """The service's view of one grid codec."""

    name: str  # "sudoku" | "maze"
    parse: Callable[[Any, tuple, LoadedModel], Any]  # (obj, loc, model) -> grid; raises TaskInputError
    encode: Callable[[Any], list[int]]
    decode: Callable[[list[int], LoadedModel], Any]
    verify: Callable[[Any, Any], list[str]]
    unsolvable: Callable[[Any], str | None]  # a reason the puzzle has no solution, checked before queueing
    # fields only this task's answers carry: (puzzle, solution, is_valid) -> {field: value}
    extras: Callable[[Any, Any, bool], dict[str, Any]] = _no_extras


def _sudoku_unsolvable(grid: sudoku.Grid) -> str | None:
    conflicts = sudoku.find_conflicts(grid)
    return f"the givens break the rules, so there is no solution: {'; '.join(conflicts[:3])}" if conflicts else None


def _maze_unsolvable(grid: maze.Grid) -> str | None:
    return None if maze.shortest_path(grid) is not None else "the goal 'G' cannot be reached from the start 'S'"


def _maze_extras(puzzle: maze.Grid, solution: maze.Grid, is_valid: bool) -> dict[str, Any]:
    return {"shortest": is_valid and maze.is_shortest(puzzle, solution)}


SUDOKU = GridTask(
    name="sudoku",
    parse=lambda obj, loc, model: sudoku.parse(obj, loc=loc),
    encode=sudoku.encode,
    decode=lambda tokens, model: sudoku.decode(tokens),
    verify=sudoku.verify,
    unsolvable=_sudoku_unsolvable,
)
MAZE = GridTask(
    name="maze",
    parse=lambda obj, loc, model: maze.parse(obj, height=model.grid_shape[0], width=model.grid_shape[1], loc=loc),
    encode=maze.encode,
    decode=lambda tokens, model: maze.decode(tokens, height=model.grid_shape[0], width=model.grid_shape[1]),
    verify=maze.verify,
    unsolvable=_maze_unsolvable,
    extras=_maze_extras,
)
GRID_TASKS = {t.name: t for t in (SUDOKU, MAZE)}


def parse_all(task: GridTask, items: list[Any], locs: list[Loc], model: LoadedModel) -> list[Any]:
    """Parse every item; raise one TaskInputError with the problems of all of them."""
    grids, errors = [], []
    for obj, loc in zip(items, locs, strict=True):
        try:
            grid = task.parse(obj, loc, model)
        except TaskInputError as e:
            errors += e.errors
            continue
        reason = task.unsolvable(grid)
        if reason is not None:
            errors.append((loc, reason))
        grids.append(grid)
    if errors:
        raise TaskInputError(errors)
    return grids


def _parse_items(task: GridTask, items: Items, model: LoadedModel) -> list[Any]:
    return parse_all(task, items.values, items.locs(), model)


def _accept(task: GridTask, model: LoadedModel, puzzle: Any) -> Callable[[list[int]], bool]:
    """Verified halting: the row stops as soon as its answer breaks no rule (a `TaskRule`: the runner's
    batched check on the device runs first, this only for the rows that pass it)."""
    return TaskRule(lambda tokens: not task.verify(puzzle, task.decode(tokens, model)))


def build_row(task: GridTask, model: LoadedModel, grid: Any, halting: str, num_views: int) -> RowSpec:
    """One request row, or a group of `num_views` views of the puzzle (view 0 = as posted).

    With views the rule check is always attached: under verified halting it ends the group, and
    otherwise the vote ranks answers that pass it first.
    """
    tokens = task.encode(grid)
    accept = _accept(task, model, grid) if halting == "verified" or num_views > 1 else None
    if num_views == 1:
        return RowSpec(tokens=tokens, accept=accept)
    views = views_for(task.name, num_views, grid_shape=model.grid_shape)
    return RowSpec(tokens=views.apply(torch.tensor(tokens, dtype=torch.int32)), accept=accept,
                   map_back=views.invert_one)


def build_result(task: GridTask, model: LoadedModel, puzzle: Any, r: Request, t0: float) -> dict[str, Any]:
    """The answer to one puzzle from its finished row (the HTTP response body, `trm solve`'s line)."""
    solution = task.decode(r.answer, model)  # type: ignore[arg-type]  # halted rows have an answer
    violations = task.verify(puzzle, solution)
    result = {
        "solution": solution, "valid": not violations, "violations": violations, "steps": r.steps,
        "halt_reason": r.halt_reason, "confidence": sigmoid(r.q_halt_logit),
        "timings": {"queue_s": (r.admitted_time or r.arrival_time) - r.arrival_time,
                    "compute_s": (r.finished_time or 0.0) - (r.admitted_time or r.arrival_time),
                    "total_s": time.monotonic() - t0},
        "model": model.name, "views": r.views_run, "view": r.view, "row_steps": r.row_steps,
        **task.extras(puzzle, solution, not violations),
    }
    if r.return_steps:
        result["trajectory"] = [task.decode(tokens, model) for tokens in r.trajectory]
        result["trajectory_confidence"] = [sigmoid(q) for q in r.trajectory_q_halt]
    return result


def _answered(metrics: Metrics | None, model: LoadedModel, task: GridTask, result: dict[str, Any] | None) -> None:
    """Count an answer as it leaves (valid or not), once per puzzle."""
    if metrics is not None and result is not None:
        metrics.observe_answer(model.name, task.name, result["valid"])


async def solve_grid(ctx: SolveContext, task: GridTask, options: RequestOptions, items: Items, *, t0: float,
                     disconnected: Disconnected | None = None) -> dict[str, Any]:
    """Validate, enqueue, await, answer. Returns the single result, or {"results": [...]} for a batch.

    A batch that misses its deadline raises DeadlineExceeded with `partial`: the finished answers.
    """
    served = ctx.registry.get(task.name, options.model)
    opts = resolve_options(options, served, ctx.settings, can_verify=True)
    check_capacity(len(items), served, items.field)  # before parsing: an oversized batch costs nothing
    grids = await validate(_parse_items, task, items, served, num_items=len(items))
    rows = [build_row(task, served, g, opts.halting, opts.views) for g in grids]
    try:
        finished = await run_rows(served, rows, opts, t0=t0, metrics=ctx.metrics, disconnected=disconnected)
    except DeadlineExceeded as e:
        if not items.is_batch or len(e.requests) != len(grids):
            raise
        partial = [build_result(task, served, g, r, t0) if r.status == RequestStatus.FINISHED_HALTED else None
                   for g, r in zip(grids, e.requests, strict=True)]
        for result in partial:
            _answered(ctx.metrics, served, task, result)
        raise DeadlineExceeded(e.timeout_s, e.requests, list(zip(items.locs(), partial, strict=True))) from None
    results = [build_result(task, served, g, r, t0) for g, r in zip(grids, finished, strict=True)]
    for result in results:
        _answered(ctx.metrics, served, task, result)
    return {"results": results} if items.is_batch else results[0]
