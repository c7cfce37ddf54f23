"""Admission control before a request's rows reach the scheduler: size checks and validation off the loop.

A batch's size is checked before any puzzle is parsed: the check is O(1), while parsing (and, for
Sudoku, looking for conflicting givens) costs about 0.1 ms per puzzle, so a 1 MB body of 11,000
puzzles held the event loop (and /healthz with it) for a second before it was refused. Batches
that are allowed but large are parsed on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from service.registry import ServedModel
from service.tasks.submit import InvalidOptionsError

T = TypeVar("T")

# Above this many items, validation runs in a thread: below it, the hop costs more than the parse.
OFF_LOOP_ITEMS = 32


def check_batch_rows(num_rows: int, served: ServedModel, loc: tuple[str | int, ...]) -> None:
    """422 at once when a request needs more rows than the model's queue can ever hold."""
    limit = served.scheduler.max_queue
    if num_rows > limit:
        raise InvalidOptionsError(loc, f"this request needs {num_rows} rows but model {served.name} queues at most "
                                       f"{limit} (TRM_MAX_QUEUE); split it")


async def validate(fn: Callable[..., T], *args: object, num_items: int) -> T:
    """`fn(*args)` inline for small batches, on a worker thread for large ones (the loop keeps serving)."""
    if num_items <= OFF_LOOP_ITEMS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
