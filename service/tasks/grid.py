"""Sudoku and Maze requests: validate every puzzle, run one row each, build the answers.

Both tasks have the same shape (one grid in, one grid out, a rule check that decides correctness),
so one `GridTask` serves both; ARC, which votes over augmented versions, is in service/tasks/arc.py.
Validation is all-or-nothing: every puzzle of a batch is parsed before any row is queued, and all
problems are reported at once with their JSON location (`["body", "puzzles", 3, 4, 7]`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from starlette.requests import Request as HttpRequest

from service.api.schemas import SolveOptions
from service.engine.rulecheck import TaskRule
from service.engine.scheduler import Request, RequestStatus
from service.metrics import Metrics
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings
from service.tasks.admission import check_batch_rows, validate
from service.tasks.submit import DeadlineExceeded, RowSpec, resolve_options, run_rows
from trm_core.tasks import TaskInputError, maze, sudoku
from trm_core.tasks.arc_vote import sigmoid
from trm_core.tasks.views import views_for


@dataclass(frozen=True)
class GridTask:
    """The service's view of one grid codec."""

    name: str  # "sudoku" | "maze"
    parse: Callable[[Any, tuple, ServedModel], Any]  # (obj, loc, model) -> grid; raises TaskInputError
    encode: Callable[[Any], list[int]]
    decode: Callable[[list[int], ServedModel], Any]
    verify: Callable[[Any, Any], list[str]]
    unsolvable: Callable[[Any], str | None]  # a reason the puzzle has no solution, checked before queueing


def _sudoku_unsolvable(grid: sudoku.Grid) -> str | None:
    conflicts = sudoku.find_conflicts(grid)
    return f"the givens break the rules, so there is no solution: {'; '.join(conflicts[:3])}" if conflicts else None


def _maze_unsolvable(grid: maze.Grid) -> str | None:
    return None if maze.shortest_path(grid) is not None else "the goal 'G' cannot be reached from the start 'S'"


SUDOKU = GridTask(
    name="sudoku",
    parse=lambda obj, loc, served: sudoku.parse(obj, loc=loc),
    encode=sudoku.encode,
    decode=lambda tokens, served: sudoku.decode(tokens),
    verify=sudoku.verify,
    unsolvable=_sudoku_unsolvable,
)
MAZE = GridTask(
    name="maze",
    parse=lambda obj, loc, served: maze.parse(obj, height=served.grid_shape[0], width=served.grid_shape[1], loc=loc),
    encode=maze.encode,
    decode=lambda tokens, served: maze.decode(tokens, height=served.grid_shape[0], width=served.grid_shape[1]),
    verify=maze.verify,
    unsolvable=_maze_unsolvable,
)


def parse_all(task: GridTask, items: list[Any], locs: list[tuple], served: ServedModel) -> list[Any]:
    """Parse every item; raise one TaskInputError with the problems of all of them."""
    grids, errors = [], []
    for obj, loc in zip(items, locs, strict=True):
        try:
            grid = task.parse(obj, loc, served)
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


def _accept(task: GridTask, served: ServedModel, puzzle: Any) -> Callable[[list[int]], bool]:
    """Verified halting: the row stops as soon as its answer breaks no rule (a `TaskRule`: the runner's
    batched check on the device runs first, this only for the rows that pass it)."""
    return TaskRule(lambda tokens: not task.verify(puzzle, task.decode(tokens, served)))


def build_row(task: GridTask, served: ServedModel, grid: Any, halting: str, num_views: int) -> RowSpec:
    """One request row, or a group of `num_views` views of the puzzle (view 0 = as posted).

    With views the rule check is always attached: under verified halting it ends the group, and
    otherwise the vote ranks answers that pass it first.
    """
    tokens = task.encode(grid)
    accept = _accept(task, served, grid) if halting == "verified" or num_views > 1 else None
    if num_views == 1:
        return RowSpec(tokens=tokens, accept=accept)
    views = views_for(task.name, num_views, grid_shape=served.grid_shape)
    return RowSpec(tokens=views.apply(torch.tensor(tokens, dtype=torch.int32)), accept=accept,
                   map_back=views.invert_one)


def build_result(task: GridTask, served: ServedModel, puzzle: Any, r: Request, t0: float,
                 metrics: Metrics | None) -> dict[str, Any]:
    solution = task.decode(r.answer, served)  # type: ignore[arg-type]  # halted rows have an answer
    violations = task.verify(puzzle, solution)
    if metrics is not None:
        metrics.observe_answer(served.name, task.name, not violations)
    result = {
        "solution": solution, "valid": not violations, "violations": violations, "steps": r.steps,
        "halt_reason": r.halt_reason, "confidence": sigmoid(r.q_halt_logit),
        "timings": {"queue_s": (r.admitted_time or r.arrival_time) - r.arrival_time,
                    "compute_s": (r.finished_time or 0.0) - (r.admitted_time or r.arrival_time),
                    "total_s": time.monotonic() - t0},
        "model": served.name, "views": r.views_run, "view": r.view, "row_steps": r.row_steps,
    }
    if task.name == "maze":
        result["shortest"] = not violations and maze.is_shortest(puzzle, solution)
    if r.return_steps:
        result["trajectory"] = [task.decode(tokens, served) for tokens in r.trajectory]
        result["trajectory_confidence"] = [sigmoid(q) for q in r.trajectory_q_halt]
    return result


async def solve_grid(task: GridTask, body: SolveOptions, single: Any, batch: list[Any] | None,
                     registry: ModelRegistry, settings: Settings, metrics: Metrics | None,
                     http: HttpRequest | None, t0: float) -> dict[str, Any]:
    """Validate, enqueue, await, answer. Returns the single result, or {"results": [...]} for a batch."""
    served = registry.get(task.name, body.model)
    opts = resolve_options(body, served, settings, can_verify=True)
    if batch is None:
        items, locs = [single], [("body", "puzzle")]
    else:
        items, locs = batch, [("body", "puzzles", i) for i in range(len(batch))]
    check_batch_rows(len(items), served, locs[0][:2])  # before parsing: an oversized batch costs nothing
    grids = await validate(parse_all, task, items, locs, served, num_items=len(items))
    rows = [build_row(task, served, g, opts.halting, opts.views) for g in grids]
    deadline = t0 + settings.request_timeout_s
    try:
        finished = await run_rows(served, rows, opts, deadline=deadline, http=http)
    except DeadlineExceeded as e:  # a batch keeps the answers of its finished rows (504 + results, app.py)
        if batch is not None and len(e.requests) == len(grids):
            e.partial = [(loc, build_result(task, served, g, r, t0, metrics)  # type: ignore[attr-defined]
                          if r.status == RequestStatus.FINISHED_HALTED else None)
                         for loc, g, r in zip(locs, grids, e.requests, strict=True)]
        raise
    results = [build_result(task, served, g, r, t0, metrics) for g, r in zip(grids, finished, strict=True)]
    return results[0] if batch is None else {"results": results}
