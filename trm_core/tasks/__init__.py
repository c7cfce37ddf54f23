"""Task codecs: one module per task (`sudoku`, `maze`, `arc`) with the same four functions.

    grid = codec.parse(obj)              # user JSON -> validated grid, else TaskInputError
    tokens = codec.encode(grid)          # the original builders' token ids (list[int])
    grid = codec.decode(tokens)          # token ids (list or tensor) -> grid
    problems = codec.verify(puzzle, answer)   # [] when the answer obeys every rule

Plus `augment` (transforms with exact inverses, with batched torch forms), `puzzle_csv` (the
one reader of the raw puzzle CSVs) and `arc_vote` (pass@K voting over ARC versions). Everything
here is stdlib + torch, so the service can use it without numpy.

This package is the one home of task facts: task names (`TASK_NAMES`), each codec's token
layout (`VOCAB_SIZE`, `SEQ_LEN`, `PAD`, `BLANK`/`EOS`), and which model shapes a codec can fill
(`grid_shape`, `check_model_shape`). Builders, trainer and service import them from here.
`get_codec(name)` looks a codec up by task name, the way a checkpoint's `task` metadata names it.
"""

from __future__ import annotations

from types import ModuleType

from . import arc, maze, sudoku
from .errors import TaskInputError

__all__ = ["TaskInputError", "get_codec", "TASK_NAMES", "grid_shape", "check_model_shape", "arc", "maze", "sudoku"]

_CODECS: dict[str, ModuleType] = {"sudoku": sudoku, "maze": maze, "arc": arc}
TASK_NAMES = tuple(_CODECS)


def get_codec(name: str) -> ModuleType:
    """The codec module for a task name ("sudoku", "maze", "arc")."""
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None


def grid_shape(seq_len: int, grid_height: int = 0, grid_width: int = 0) -> tuple[int, int]:
    """Rows and columns of a model's grid (its canvas for ARC): the declared ones, else a square of seq_len."""
    if grid_height and grid_width:
        return grid_height, grid_width
    side = int(round(seq_len ** 0.5))
    return side, side


def check_model_shape(task: str, *, vocab_size: int, seq_len: int, grid_height: int = 0, grid_width: int = 0) -> None:
    """Raise ValueError unless the task's codec can fill a model of this shape (vocab and token layout)."""
    codec = get_codec(task)
    if vocab_size != codec.VOCAB_SIZE:
        raise ValueError(f"config vocab_size={vocab_size}; the {task} codec uses {codec.VOCAB_SIZE}")
    if task == "sudoku" and seq_len != sudoku.SEQ_LEN:
        raise ValueError(f"config seq_len={seq_len}; Sudoku needs {sudoku.SEQ_LEN}")
    h, w = grid_shape(seq_len, grid_height, grid_width)
    if h * w != seq_len:
        raise ValueError(f"config grid {h}x{w} does not cover seq_len={seq_len}")
    if task == "arc" and h != w:
        raise ValueError(f"ARC needs a square canvas; config grid is {h}x{w}")
