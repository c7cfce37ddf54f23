"""Verified halting's rule check, for all rows of a step at once on the device.

Under `halting="verified"` a row stops at the first step whose answer passes the task's rule check
(`Request.accept`: decode, then the codec's `verify`, in Python). Doing that for every running row
after every step costs more host time than the step itself once the batch is large. So the runner
first computes, on the device and for the whole batch, a check that every accepted answer passes
(`ModelOutput.passed`), and the scheduler calls `accept` only for the rows that pass it; answers
are the same as checking every row in Python. That holds only when `accept` is the task's rule
check, so such an `accept` says so by being a `TaskRule`; any other callable sees every row.

- Sudoku: the check *is* the rule check (`sudoku.is_solution_batch`: givens kept, every unit holds
  1-9 once).
- Maze: a necessary condition: walls, S and G kept, path cells only on open cells, every path cell
  with exactly two route neighbours and S and G with one each. Stray loops away from the route
  pass it; `maze.verify` then rejects them.

Both are invariant under the tasks' views (Sudoku symmetries, Maze dihedral maps), so they run on
the rows as stepped, in each view's own frame. Tasks without a batched form (ARC) get None and
every row is checked in Python, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trm_core import TRMConfig
from trm_core.tasks import grid_shape, maze, sudoku

__all__ = ["RowCheck", "TaskRule", "row_check_for", "sudoku_rows", "maze_rows"]

RowCheck = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (inputs, preds) int [n, L] -> bool [n]


@dataclass(frozen=True)
class TaskRule:
    """A `Request.accept` that is the task's own rule check (so the batched check may go first)."""

    check: Callable[[list[int]], bool]  # answer tokens, in the puzzle's frame -> passes the rules

    def __call__(self, tokens: list[int]) -> bool:
        return self.check(tokens)

_WALL, _OPEN, _START, _GOAL, _PATH = (maze.CHARSET.index(ch) + 1 for ch in maze.CHARSET)


def sudoku_rows(inputs: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """bool [n]: the predicted tokens are a valid solution of the input tokens (token t -> digit t - 1)."""
    return sudoku.is_solution_batch((inputs.long() - 1).clamp_(min=0), (preds.long() - 1).clamp_(min=0))


def maze_rows(height: int, width: int) -> RowCheck:
    """The Maze check for height x width grids (see the module doc)."""

    def check(inputs: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
        n = inputs.shape[0]
        given, got = inputs.long().view(n, height, width), preds.long().view(n, height, width)
        fixed = (given == _WALL) | (given == _START) | (given == _GOAL)
        walkable = (given == _OPEN) | (given == _PATH)
        cells_ok = torch.where(fixed, got == given, (got == _OPEN) | (got == _PATH))
        route = ((got == _PATH) | (got == _START) | (got == _GOAL)).to(torch.int8)
        padded = F.pad(route, (1, 1, 1, 1))
        degree = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:])
        path = (got == _PATH) & walkable
        ends = (got == _START) | (got == _GOAL)
        degree_ok = torch.where(path, degree == 2, torch.where(ends, degree == 1, True))
        return (cells_ok & degree_ok).flatten(1).all(-1)

    return check


def row_check_for(config: TRMConfig) -> RowCheck | None:
    """The batched check for the model's task, or None when the task has none."""
    if config.task == "sudoku":
        return sudoku_rows
    if config.task == "maze":
        return maze_rows(*grid_shape(config.seq_len, config.grid_height, config.grid_width))
    return None
