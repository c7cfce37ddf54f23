"""Continuous batching at ACT-step granularity: one scheduler iteration = one `TRM.step`.

LLM servers (Orca, vLLM) schedule at the granularity of one decoding iteration so that finished
sequences leave and new ones join between two forward passes. A TRM has the same shape one level
up: every row of a batch halts at its own ACT step. This module keeps a fixed pool of slots (the
rows of one carry), and between two steps lets halted rows leave and waiting requests take the
free slots.

Surface (vLLM v1's scheduler interface): `add_request(s)`, `cancel`, `schedule()` (decisions only,
returned as data), `update_from_output()` (the model's plain output in, finished requests out),
`stats()`; `step()` composes schedule -> model -> update. What is not here: asyncio, HTTP,
Prometheus, codecs. A worker thread (service/worker.py) drives `step()`; callbacks
(`Request.on_finish`) carry results out. `add_request(s)` and `cancel` may be called from any
thread; `schedule`/`step`/`update_from_output` from one thread only (the worker).

Halting (trm_core.halting semantics, decided per row on the host after one transfer per step):
`learned` halts when q_halt > 0, `fixed` only at the step budget, `verified` as soon as the
request's `accept(answer)` passes (a verified answer is final); every mode halts at the budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields

import torch

from trm_core import TRM, Carry

from .request import HALTING_MODES, Request, RequestStatus

__all__ = ["Scheduler", "SchedulerOutput", "StepResult", "StepReport", "SchedulerStats", "QueueFullError",
           "Request", "RequestStatus", "HALTING_MODES"]

logger = logging.getLogger(__name__)

class QueueFullError(RuntimeError):
    """The wait queue cannot take the request's rows; retry later (HTTP 429)."""

    def __init__(self, needed: int, depth: int, capacity: int) -> None:
        super().__init__(f"queue full: {depth} of {capacity} rows waiting, request needs {needed}")
        self.needed, self.depth, self.capacity = needed, depth, capacity


@dataclass
class SchedulerOutput:
    """What `schedule()` decided for the next step (plain data, no tensors)."""

    admitted: list[Request]  # joined this step; their rows must be reset before stepping
    finished: list[Request]  # left without stepping (cancelled, timed out)
    num_rows: int  # rows to step: the prefix of the pool that holds every running slot


@dataclass
class StepResult:
    """The model's output for one step, moved to the host (the one sync per step)."""

    q_halt: list[float]  # [num_rows]
    preds: torch.Tensor  # int [num_rows, seq_len] argmax tokens, CPU


@dataclass
class StepReport:
    """What one `step()` did, for metrics and benchmarks."""

    num_running: int  # rows holding a request during the step
    num_slots: int
    duration_s: float  # wall time of reset + model step + transfer
    finished: list[Request]  # every request finished in this iteration (halted or evicted)


@dataclass
class SchedulerStats:
    num_waiting: int
    num_running: int
    num_slots: int
    num_steps: int  # model steps taken
    num_finished: int
    occupancy_sum: float  # sum over steps of running/slots; mean = occupancy_sum / num_steps
    busy_s: float  # wall time spent in model steps

    @property
    def mean_occupancy(self) -> float:
        return self.occupancy_sum / self.num_steps if self.num_steps else 0.0


class Scheduler:
    """Slot pool, bounded wait queue and halting bookkeeping for one model.

    Args:
        model: a TRM in eval mode; its device is the pool's device.
        num_slots: rows in the carry (the maximum batch).
        max_queue: rows allowed to wait; more raise QueueFullError.
        batching: "continuous" admits into free slots between any two steps; "request" admits only
            into an empty pool and runs that batch until every row has finished (the baseline).
        max_wait_s: when the pool is empty and fewer requests wait than there are slots, hold the
            first step this long after the oldest arrival so that a batch can form.
    """

    def __init__(self, model: TRM, num_slots: int, max_queue: int, *, batching: str = "continuous",
                 max_wait_s: float = 0.0) -> None:
        if batching not in ("continuous", "request"):
            raise ValueError(f"batching={batching!r}; use 'continuous' or 'request'")
        self.model = model
        self.num_slots, self.max_queue, self.batching, self.max_wait_s = num_slots, max_queue, batching, max_wait_s
        self.requests: dict[str, Request] = {}  # every unfinished request by id
        self.waiting: deque[Request] = deque()
        self.running: list[Request | None] = [None] * num_slots  # slot -> request
        self._num_waiting_rows = 0
        self._pending_cancels: list[tuple[str, RequestStatus]] = []
        self._lock = threading.Lock()  # guards requests, waiting, _pending_cancels (cross-thread)
        self._num_steps = self._num_finished = 0
        self._occupancy_sum = self._busy_s = 0.0
        self._alloc_pool()

    def _alloc_pool(self) -> None:
        """Carry and host staging buffers, allocated once; rows are reset in place with masks."""
        cfg, B = self.model.config, self.num_slots
        with torch.inference_mode():
            self.carry: Carry = self.model.empty_carry(B)
        pin = self.model.device.type == "cuda"
        self._stage_rows = torch.zeros(B, dtype=torch.bool, pin_memory=pin)
        self._stage_inputs = torch.zeros(B, cfg.seq_len, dtype=torch.int32, pin_memory=pin)
        self._stage_pids = torch.zeros(B, dtype=torch.int32, pin_memory=pin)

    def reset_pool(self) -> None:
        """Fresh carry after a failed step (its tensors may be half-written). Pool must be empty."""
        if any(r is not None for r in self.running):
            raise RuntimeError("reset_pool with running requests; abort_all first")
        self._alloc_pool()

    # ---- requests in (any thread) -----------------------------------------------------------
    def add_request(self, request: Request) -> None:
        self.add_requests([request])

    def add_requests(self, requests: Iterable[Request]) -> None:
        """Queue requests all-or-nothing: either every one fits in the queue or QueueFullError."""
        requests = list(requests)
        seq_len = self.model.config.seq_len
        for r in requests:
            if tuple(r.inputs.shape) != (seq_len,):
                raise ValueError(f"request {r.request_id}: inputs shape {tuple(r.inputs.shape)}, expected ({seq_len},)")
        with self._lock:
            if self._num_waiting_rows + len(requests) > self.max_queue:
                raise QueueFullError(len(requests), self._num_waiting_rows, self.max_queue)
            dup = [r.request_id for r in requests if r.request_id in self.requests]
            if dup or len({r.request_id for r in requests}) != len(requests):
                raise ValueError(f"duplicate request ids: {dup or [r.request_id for r in requests]}")
            for r in requests:
                r.status = RequestStatus.WAITING
                self.requests[r.request_id] = r
                self.waiting.append(r)
            self._num_waiting_rows += len(requests)

    def cancel(self, request_id: str, status: RequestStatus = RequestStatus.FINISHED_CANCELLED) -> bool:
        """Finish a request early. A waiting one leaves now; a running one frees its slot before the
        next step (never mid-step). Returns False when it is unknown or already finished."""
        if not status.is_finished:
            raise ValueError(f"cancel needs a finished status, got {status.name}")
        with self._lock:
            r = self.requests.get(request_id)
            if r is None:
                return False
            if r.status == RequestStatus.WAITING:
                self.waiting.remove(r)
                self._num_waiting_rows -= 1
                del self.requests[request_id]
            else:
                self._pending_cancels.append((request_id, status))
                return True
        self._finish(r, status, time.monotonic())
        return True

    def abort_all(self, status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> list[Request]:
        """Finish every unfinished request (shutdown, or a failed step). Call from the stepping thread."""
        with self._lock:
            victims = list(self.requests.values())
            self.requests.clear()
            self.waiting.clear()
            self._num_waiting_rows = 0
            self._pending_cancels.clear()
        now = time.monotonic()
        for r in victims:
            self._release(r)
            self._finish(r, status, now)
        return victims

    # ---- one iteration (stepping thread) ----------------------------------------------------
    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def time_until_step(self, now: float | None = None) -> float | None:
        """0 to step now, > 0 to hold a partial first batch that long, None when there is nothing to do."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if any(r is not None for r in self.running) or self._pending_cancels:
                return 0.0
            if not self.waiting:
                return None
            if len(self.waiting) >= self.num_slots or self.max_wait_s <= 0:
                return 0.0
            oldest = self.waiting[0]
            return max(0.0, min(oldest.arrival_time + self.max_wait_s, oldest.deadline) - now)

    def schedule(self, now: float | None = None) -> SchedulerOutput:
        """Decide who leaves and who joins before the next step.

        NOTE: this is the one idea of the service. Rows halt independently, so there is no batch
        boundary: cancelled and timed-out rows leave here (halted ones already left in
        `update_from_output`), and waiting requests take the free slots, lowest slot first so
        that the stepped prefix of the pool stays short at low load.
        """
        now = time.monotonic() if now is None else now
        finished: list[Request] = []
        with self._lock:
            # 1. Cancellations requested since the last step.
            for request_id, status in self._pending_cancels:
                r = self.requests.pop(request_id, None)
                if r is not None:
                    finished.append(self._finish_unlocked(r, status, now))
            self._pending_cancels.clear()
            # 2. Deadlines, waiting and running alike.
            for r in [r for r in self.requests.values() if r.deadline <= now]:
                if r.status == RequestStatus.WAITING:
                    self.waiting.remove(r)
                    self._num_waiting_rows -= 1
                del self.requests[r.request_id]
                finished.append(self._finish_unlocked(r, RequestStatus.FINISHED_TIMEOUT, now))
            # 3. Admission. Request-level batching admits only into an empty pool.
            admitted: list[Request] = []
            is_empty = all(r is None for r in self.running)
            if self.batching == "continuous" or is_empty:
                for slot in range(self.num_slots):
                    if not self.waiting:
                        break
                    if self.running[slot] is None:
                        r = self.waiting.popleft()
                        self._num_waiting_rows -= 1
                        r.status, r.slot, r.admitted_time = RequestStatus.RUNNING, slot, now
                        self.running[slot] = r
                        admitted.append(r)
        for r in finished:
            self._call_on_finish(r)
        occupied = [slot for slot, r in enumerate(self.running) if r is not None]
        return SchedulerOutput(admitted=admitted, finished=finished, num_rows=occupied[-1] + 1 if occupied else 0)

    def execute(self, sched: SchedulerOutput) -> StepResult | None:
        """Reset the admitted rows and run one model step over the occupied prefix of the pool."""
        n = sched.num_rows
        if n == 0:
            return None
        with torch.inference_mode():
            view = _slice_carry(self.carry, n)
            if sched.admitted:
                for r in sched.admitted:
                    self._stage_rows[r.slot] = True
                    self._stage_inputs[r.slot].copy_(r.inputs)
                    self._stage_pids[r.slot] = r.puzzle_id
                dev = self.model.device
                view = self.model.reset_rows(view, self._stage_rows[:n].to(dev, non_blocking=True),
                                             self._stage_inputs[:n].to(dev, non_blocking=True),
                                             self._stage_pids[:n].to(dev, non_blocking=True))
            view, out = self.model.step(view)
            # The one host sync per step: the halting decision needs q_halt, the answers need tokens.
            q_halt = out.q_halt_logits.float().cpu().tolist()
            preds = out.logits.argmax(dim=-1).to(torch.int32).cpu()  # [n, L]
            if sched.admitted:  # only now: a non_blocking copy from pinned memory may still have been pending
                self._stage_rows.zero_()
            if n == self.num_slots:
                self.carry = view
            else:  # write the stepped prefix back into the pool (rows >= n are idle and untouched)
                for f in fields(Carry):
                    getattr(self.carry, f.name)[:n].copy_(getattr(view, f.name))
        return StepResult(q_halt=q_halt, preds=preds)

    def update_from_output(self, sched: SchedulerOutput, result: StepResult | None,
                           now: float | None = None) -> list[Request]:
        """Advance every running row by one step and let the halted ones leave. Returns those."""
        if result is None:
            return []
        now = time.monotonic() if now is None else now
        halted: list[Request] = []
        for slot in range(sched.num_rows):
            r = self.running[slot]
            if r is None:
                continue
            r.steps += 1
            q = result.q_halt[slot]
            tokens: list[int] | None = None
            if r.return_steps or r.halting == "verified":
                tokens = result.preds[slot].tolist()
                if r.return_steps:
                    r.trajectory.append(tokens)
                    r.trajectory_q_halt.append(q)
            reason = None
            if r.halting == "verified":
                if r.accept(tokens):  # type: ignore[misc]  # __post_init__ guarantees it
                    reason = "verified"
            elif r.halting == "learned" and q > 0:
                reason = "learned"
            if reason is None and r.steps >= r.max_steps:
                reason = "budget"
            if reason is not None:
                r.answer = tokens if tokens is not None else result.preds[slot].tolist()
                r.q_halt_logit, r.halt_reason = q, reason
                halted.append(r)
        with self._lock:
            for r in halted:
                self.requests.pop(r.request_id, None)
                self._finish_unlocked(r, RequestStatus.FINISHED_HALTED, now)
        for r in halted:
            self._call_on_finish(r)
        return halted

    def step(self) -> StepReport:
        """Schedule, execute, update: one ACT step for every running row."""
        t0 = time.perf_counter()
        sched = self.schedule()
        num_running = sum(r is not None for r in self.running)
        result = self.execute(sched)
        duration = time.perf_counter() - t0
        halted = self.update_from_output(sched, result)
        if result is not None:
            self._num_steps += 1
            self._occupancy_sum += num_running / self.num_slots
            self._busy_s += duration
        return StepReport(num_running=num_running if result is not None else 0, num_slots=self.num_slots,
                          duration_s=duration, finished=sched.finished + halted)

    def warmup(self, num_steps: int) -> None:
        """Run `num_steps` steps on a full pool of padding (allocator, kernels), then leave it idle."""
        if self.requests:
            raise RuntimeError("warmup must run before any request is added")
        with torch.inference_mode():
            carry = self.model.empty_carry(self.num_slots)
            ones = torch.ones(self.num_slots, dtype=torch.bool, device=self.model.device)
            carry = self.model.reset_rows(carry, ones, carry.inputs, carry.puzzle_ids)
            for _ in range(num_steps):
                carry, out = self.model.step(carry)
                out.q_halt_logits.cpu()  # wait for the device, as a real step does
        self._alloc_pool()

    def stats(self) -> SchedulerStats:
        with self._lock:
            return SchedulerStats(
                num_waiting=self._num_waiting_rows, num_running=sum(r is not None for r in self.running),
                num_slots=self.num_slots, num_steps=self._num_steps, num_finished=self._num_finished,
                occupancy_sum=self._occupancy_sum, busy_s=self._busy_s)

    # ---- internals ---------------------------------------------------------------------------
    def _release(self, r: Request) -> None:
        if r.slot is not None and self.running[r.slot] is r:
            self.running[r.slot] = None
        r.slot = None

    def _finish_unlocked(self, r: Request, status: RequestStatus, now: float) -> Request:
        self._release(r)
        r.status, r.finished_time = status, now
        self._num_finished += 1
        return r

    def _finish(self, r: Request, status: RequestStatus, now: float) -> None:
        with self._lock:
            self._finish_unlocked(r, status, now)
        self._call_on_finish(r)

    @staticmethod
    def _call_on_finish(r: Request) -> None:
        if r.on_finish is None:
            return
        try:
            r.on_finish(r)
        except Exception:  # a broken callback must not stop the pool; the request is finished anyway
            logger.exception("on_finish callback of request %s failed", r.request_id)


def _slice_carry(carry: Carry, n: int) -> Carry:
    """The first n rows of a carry as views (no copy)."""
    if n == carry.batch_size:
        return carry
    return Carry(**{f.name: getattr(carry, f.name)[:n] for f in fields(Carry)})
