"""From rows to finished rows: build each row's scheduler request, submit them, await, clean up on every exit.

A solve request becomes one scheduler request per puzzle (ARC: per test input x augmented version).
They are queued all-or-nothing, then the caller awaits their futures, which the loop thread resolves
through `loop.call_soon_threadsafe`. Three things end the wait early, and each one frees the rows'
slots before the next ACT step: the deadline, the client going away, or the caller being cancelled
(server shutdown, or the client's task on the in-process transport).

`make_request` is the one place a row becomes a scheduler `Request`; the server (here) and `trm
solve` (service/tasks/offline.py) both use it.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import torch

from service.engine.estimate import queue_retry_after_s
from service.engine.loop import WorkerClosedError
from service.engine.scheduler import QueueFullError, Request, RequestStatus
from service.metrics import Metrics
from service.registry import ServedModel
from service.tasks.admission import admit
from service.tasks.errors import ClientGone, DeadlineExceeded, QueueFull, ServiceUnavailable
from service.tasks.options import ResolvedOptions

# Completes when the client goes away (the HTTP layer builds it from its transport).
Disconnected = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class RowSpec:
    """One request to run: tokens (or K views of them), puzzle-embedding id and the rule check.

    With views, `tokens` is [K, L] (view 0 = as posted) and `map_back(view, answer)` maps a view's
    answer back to the puzzle as posted; `accept` always judges answers in the posted frame.
    """

    tokens: Sequence[int] | torch.Tensor
    puzzle_id: int = 0
    accept: Callable[[list[int]], bool] | None = None
    map_back: Callable[[int, list[int]], list[int]] | None = None

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0] if isinstance(self.tokens, torch.Tensor) and self.tokens.dim() == 2 else 1


def make_request(request_id: str, row: RowSpec, opts: ResolvedOptions, *, deadline: float = math.inf,
                 on_finish: Callable[[Request], None] | None = None) -> Request:
    """The scheduler request of one row under resolved options."""
    return Request(request_id=request_id, inputs=torch.as_tensor(row.tokens, dtype=torch.int32),
                   max_steps=opts.max_steps, halting=opts.halting, puzzle_id=row.puzzle_id, accept=row.accept,
                   map_back=row.map_back, max_running_rows=opts.max_view_rows if row.num_rows > 1 else None,
                   first_wave=opts.view_wave if row.num_rows > 1 else None, priority=opts.priority,
                   return_steps=opts.return_steps, deadline=deadline, on_finish=on_finish)


def _resolve(fut: asyncio.Future[Request], request: Request) -> None:
    if not fut.done():
        fut.set_result(request)


def _consume(fut: asyncio.Future) -> None:
    """Mark a cancelled gather's CancelledError as retrieved (else asyncio logs it as never retrieved)."""
    if not fut.cancelled():
        fut.exception()


def _finisher(served: ServedModel, loop: asyncio.AbstractEventLoop,
              fut: asyncio.Future[Request]) -> Callable[[Request], None]:
    def on_finish(r: Request) -> None:  # loop thread
        if served.on_finish is not None:
            served.on_finish(r)  # metrics: every request that leaves, whatever the reason
        try:
            loop.call_soon_threadsafe(_resolve, fut, r)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass
    return on_finish


def _submit(served: ServedModel, requests: list[Request], num_rows: int) -> None:
    """Queue every request or none; the engine's refusals become the errors callers handle."""
    try:
        served.worker.submit(requests)
    except QueueFullError as e:
        raise QueueFull(str(e), queue_retry_after_s(served, num_rows)) from e
    except WorkerClosedError as e:
        raise ServiceUnavailable(str(e)) from e


async def _await_rows(served: ServedModel, requests: list[Request], futures: list[asyncio.Future[Request]],
                      opts: ResolvedOptions, deadline: float, disconnected: Disconnected | None) -> list[Request]:
    """Wait for every row, the deadline or the client leaving; on any early exit cancel what is left."""
    all_done = asyncio.ensure_future(asyncio.gather(*futures))
    all_done.add_done_callback(_consume)
    watchers: set[asyncio.Future] = {all_done}
    gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
    if gone is not None:
        watchers.add(gone)
    status = RequestStatus.FINISHED_CANCELLED
    try:
        done, _ = await asyncio.wait(watchers, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if all_done in done:
            return all_done.result()
        if gone is not None and gone in done:
            raise ClientGone("client disconnected")
        status = RequestStatus.FINISHED_TIMEOUT
        raise DeadlineExceeded(opts.timeout_s, requests)
    finally:
        if gone is not None:
            gone.cancel()
        if not all_done.done():  # timeout, disconnect or our own cancellation: free the slots
            served.worker.cancel([r.request_id for r in requests if not r.status.is_finished], status)
            all_done.cancel()


async def run_rows(served: ServedModel, rows: Sequence[RowSpec], opts: ResolvedOptions, *, t0: float,
                   metrics: Metrics | None = None, disconnected: Disconnected | None = None) -> list[Request]:
    """Run `rows` on `served` and return the finished scheduler requests, in the order of `rows`.

    `t0` is the request's arrival (monotonic); its deadline is `t0 + opts.timeout_s`. Raises
    InvalidOptionsError / DeadlineUnmeetable (admission), QueueFull, DeadlineExceeded,
    ServiceUnavailable, ClientGone.
    """
    loop = asyncio.get_running_loop()
    deadline = t0 + opts.timeout_s
    base = uuid.uuid4().hex
    futures = [loop.create_future() for _ in rows]
    requests = [make_request(f"{base}-{i}", row, opts, deadline=deadline, on_finish=_finisher(served, loop, fut))
                for i, (row, fut) in enumerate(zip(rows, futures, strict=True))]
    num_rows = sum(r.num_views for r in requests)
    admit(served, num_rows, opts, deadline, metrics)
    _submit(served, requests, num_rows)
    finished = await _await_rows(served, requests, futures, opts, deadline, disconnected)
    statuses = {r.status for r in finished}
    if RequestStatus.FINISHED_TIMEOUT in statuses:
        raise DeadlineExceeded(opts.timeout_s, requests)
    if statuses - {RequestStatus.FINISHED_HALTED}:
        raise ServiceUnavailable(f"model {served.name} stopped before the request finished (shutdown or failed step)")
    return finished
