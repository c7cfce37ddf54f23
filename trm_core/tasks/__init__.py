"""Task codecs: one module per task (`sudoku`, `maze`, `arc`) with the same four functions.

    grid = codec.parse(obj)              # user JSON -> validated grid, else TaskInputError
    tokens = codec.encode(grid)          # the original builders' token ids (list[int])
    grid = codec.decode(tokens)          # token ids (list or tensor) -> grid
    problems = codec.verify(puzzle, answer)   # [] when the answer obeys every rule

Plus `augment` (transforms with exact inverses) and `arc_vote` (pass@K voting over ARC
versions). Everything here is stdlib (+ torch tensors accepted where tokens go in), so the
service can use it without numpy. `get_codec(name)` looks a codec up by task name, the way a
checkpoint's `task` metadata names it.
"""

from __future__ import annotations

from types import ModuleType

from . import arc, maze, sudoku
from .errors import TaskInputError

__all__ = ["TaskInputError", "get_codec", "TASK_NAMES", "arc", "maze", "sudoku"]

_CODECS: dict[str, ModuleType] = {"sudoku": sudoku, "maze": maze, "arc": arc}
TASK_NAMES = tuple(_CODECS)


def get_codec(name: str) -> ModuleType:
    """The codec module for a task name ("sudoku", "maze", "arc")."""
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None
