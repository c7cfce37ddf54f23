"""Admission control before a request's rows reach the scheduler: size, deadline, validation off the loop.

A batch's size is checked before any puzzle is parsed: the check is O(1), while parsing (and, for
Sudoku, looking for conflicting givens) costs about 0.1 ms per puzzle, so an oversized body is
refused before it can hold the event loop. Batches that are allowed but large are parsed on a
worker thread. Once the rows are built (views multiply them), the same capacity check runs on the
real row count, then the deadline estimate (service/engine/estimate.py) may shed the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from service.engine.estimate import DeadlineUnmeetable, check_deadline
from service.metrics import Metrics
from service.registry import ServedModel
from service.tasks.errors import InvalidOptionsError, Loc
from service.tasks.options import ResolvedOptions

T = TypeVar("T")

# Above this many items, validation runs in a thread: below it, the hop costs more than the parse.
OFF_LOOP_ITEMS = 32


def check_capacity(num_rows: int, served: ServedModel, loc: Loc = ()) -> None:
    """Refuse a request that needs more rows than the model's queue can ever hold (it could never run)."""
    limit = served.scheduler.max_queue
    if num_rows > limit:
        raise InvalidOptionsError(loc, f"this request needs {num_rows} rows but model {served.name} queues at most "
                                       f"{limit} (TRM_MAX_QUEUE); split it")


def admit(served: ServedModel, num_rows: int, opts: ResolvedOptions, deadline: float, metrics: Metrics | None) -> None:
    """The last checks before queueing: capacity, then whether the deadline can be met (a shed request
    is counted here, where the decision is taken)."""
    check_capacity(num_rows, served)
    try:
        # refuse now, not time out later; only the queued rows served before this priority count
        check_deadline(served, num_rows, opts.max_steps, deadline, opts.priority, opts.timeout_s)
    except DeadlineUnmeetable as e:
        if metrics is not None:
            metrics.observe_shed(e.model, e.task, e.num_rows)
        raise


async def validate(fn: Callable[..., T], *args: object, num_items: int) -> T:
    """`fn(*args)` inline for small batches, on a worker thread for large ones (the loop keeps serving)."""
    if num_items <= OFF_LOOP_ITEMS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
