"""From validated rows to finished rows: submit to a model's worker, await, clean up on every exit.

A solve request becomes one scheduler row per puzzle (ARC: per test input x augmented version).
The rows are queued all-or-nothing, then the handler awaits their futures, which the worker thread
resolves through `loop.call_soon_threadsafe`. Three things can end the wait early, and each one
frees the rows' slots before the next ACT step: the deadline (504), the client going away, or the
handler being cancelled (server shutdown, or the client's task on the in-process transport).

Not here: codecs and response building (service/tasks.py, service/tasks/arc.py), HTTP status mapping
(service/api/app.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from starlette.requests import Request as HttpRequest

from service.api.schemas import SolveOptions
from service.engine.estimate import check_deadline, queue_retry_after_s
from service.engine.scheduler import QueueFullError, Request, RequestStatus
from service.registry import ServedModel
from service.settings import Settings


class InvalidOptionsError(ValueError):
    """A request option this server cannot honour (HTTP 422); `loc` names the option."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class DeadlineExceeded(TimeoutError):
    """The request did not finish within TRM_REQUEST_TIMEOUT_S (HTTP 504). `requests` are its scheduler
    requests, in order: those FINISHED_HALTED have answers a batch still returns (service/tasks/grid.py)."""

    def __init__(self, msg: str, requests: Sequence[Request] = ()) -> None:
        super().__init__(msg)
        self.requests = list(requests)


class ServiceUnavailable(RuntimeError):
    """Not ready, draining, or the model's step failed (HTTP 503)."""


class ClientGone(RuntimeError):
    """The client disconnected; its rows were cancelled and nobody reads the response."""


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


@dataclass(frozen=True)
class ResolvedOptions:
    halting: str
    max_steps: int
    return_steps: bool
    views: int = 1
    max_view_rows: int | None = None
    priority: int = 0
    view_wave: int | None = None  # verified views: the first wave (Request.first_wave); None: all at once
    timeout_s: float | None = None  # the whole deadline budget (TRM_REQUEST_TIMEOUT_S)


def resolve_options(opts: SolveOptions, served: ServedModel, settings: Settings, *,
                    can_verify: bool) -> ResolvedOptions:
    """Fill defaults and refuse what this server will not run (naming the option and the limit)."""
    halting = opts.halting or settings.default_halting
    if halting == "verified" and not can_verify:
        if opts.halting is not None:
            raise InvalidOptionsError(("body", "halting"), f"halting='verified' needs a rule check that decides "
                                      f"correctness; {served.task} has none; use 'learned' or 'fixed'")
        halting = "learned"  # the server-wide default does not apply to this task
    limit = settings.max_steps_limit
    if opts.max_steps is not None and opts.max_steps > limit:
        raise InvalidOptionsError(("body", "max_steps"), f"max_steps={opts.max_steps} exceeds this server's "
                                  f"limit of {limit} (TRM_MAX_STEPS_LIMIT)")
    max_steps = opts.max_steps or settings.default_max_steps or served.config.halt_max_steps
    views = getattr(opts, "views", None) or 1
    if views > settings.max_views:
        raise InvalidOptionsError(("body", "views"), f"views={views} exceeds this server's limit of "
                                  f"{settings.max_views} (TRM_MAX_VIEWS)")
    return ResolvedOptions(halting=halting, max_steps=min(max_steps, limit), return_steps=opts.return_steps,
                           views=views, max_view_rows=settings.max_view_rows, priority=opts.priority,
                           view_wave=settings.view_wave or None,
                           timeout_s=settings.request_timeout_s)


def _resolve(fut: asyncio.Future[Request], request: Request) -> None:
    if not fut.done():
        fut.set_result(request)


def _consume(fut: asyncio.Future) -> None:
    """Mark a cancelled gather's CancelledError as retrieved (else asyncio logs it as never retrieved)."""
    if not fut.cancelled():
        fut.exception()


async def _wait_disconnect(http: HttpRequest) -> None:
    """Returns when the client goes away (the body has been read, so only http.disconnect is left)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


async def run_rows(served: ServedModel, rows: Sequence[RowSpec], opts: ResolvedOptions, *,
                   deadline: float, http: HttpRequest | None = None) -> list[Request]:
    """Run `rows` on `served` and return the finished scheduler requests, in the order of `rows`.

    Raises QueueFullError / WorkerClosedError (from submit), DeadlineExceeded, ServiceUnavailable,
    ClientGone. On any early exit every row still queued or running is cancelled.
    """
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Request]] = []
    requests: list[Request] = []
    base = uuid.uuid4().hex

    def finisher(fut: asyncio.Future[Request]) -> Callable[[Request], None]:
        def on_finish(r: Request) -> None:  # worker thread
            if served.on_finish is not None:
                served.on_finish(r)  # metrics: every request that leaves, whatever the reason
            try:
                loop.call_soon_threadsafe(_resolve, fut, r)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
        return on_finish

    for i, row in enumerate(rows):
        fut = loop.create_future()
        futures.append(fut)
        requests.append(Request(
            request_id=f"{base}-{i}", inputs=torch.as_tensor(row.tokens, dtype=torch.int32), max_steps=opts.max_steps,
            halting=opts.halting, puzzle_id=row.puzzle_id, accept=row.accept, map_back=row.map_back,
            max_running_rows=opts.max_view_rows if row.num_rows > 1 else None,
            first_wave=opts.view_wave if row.num_rows > 1 else None,
            return_steps=opts.return_steps, priority=opts.priority, deadline=deadline, on_finish=finisher(fut)))
    num_rows = sum(r.num_views for r in requests)
    if num_rows > served.scheduler.max_queue:
        raise InvalidOptionsError(("body",), f"this request needs {num_rows} rows but model {served.name} "
                                  f"queues at most {served.scheduler.max_queue} (TRM_MAX_QUEUE); split it")
    check_deadline(served, num_rows, opts.max_steps, deadline, opts.priority, opts.timeout_s)  # 429 now, not 504 later
    try:
        served.worker.submit(requests)
    except QueueFullError as e:
        e.retry_after_s = queue_retry_after_s(served, num_rows)  # type: ignore[attr-defined]  # the 429 handler's
        raise

    all_done = asyncio.ensure_future(asyncio.gather(*futures))
    all_done.add_done_callback(_consume)
    watchers: set[asyncio.Future] = {all_done}
    gone = asyncio.ensure_future(_wait_disconnect(http)) if http is not None else None
    if gone is not None:
        watchers.add(gone)
    status = RequestStatus.FINISHED_CANCELLED
    try:
        done, _ = await asyncio.wait(watchers, timeout=max(0.0, deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if all_done in done:
            finished = all_done.result()
        elif gone is not None and gone in done:
            raise ClientGone("client disconnected")
        else:
            status = RequestStatus.FINISHED_TIMEOUT
            raise DeadlineExceeded("deadline passed", requests)
    finally:
        if gone is not None:
            gone.cancel()
        if not all_done.done():  # timeout, disconnect or our own cancellation: free the slots
            served.worker.cancel([r.request_id for r in requests if not r.status.is_finished], status)
            all_done.cancel()
    statuses = {r.status for r in finished}
    if RequestStatus.FINISHED_TIMEOUT in statuses:
        raise DeadlineExceeded("deadline passed", requests)
    if statuses - {RequestStatus.FINISHED_HALTED}:
        raise ServiceUnavailable(f"model {served.name} stopped before the request finished (shutdown or failed step)")
    return finished
