"""Continuous batching at ACT-step granularity: one scheduler iteration = one `TRM.step`.

LLM servers (Orca, vLLM) schedule at the granularity of one decoding iteration so that finished
sequences leave and new ones join between two forward passes. A TRM has the same shape one level
up: every row of a batch halts at its own ACT step. This module keeps a fixed pool of slots (the
rows of one carry), and between two steps lets halted rows leave and waiting rows take the free
slots. A request is a group of rows (one per view of its puzzle, service/engine/request.py) that share one
result.

The Scheduler is bookkeeping over plain data only (vLLM v1's split): it never touches a model or a
device. `schedule()` returns what the model runner must do (rows to reset, the prefix to step);
`update_from_output()` takes the runner's plain output (q_halt per row, argmax tokens) and returns
the requests that finished. Neither fires callbacks: the engine (service/engine/core.py) does, after
them. `add_request(s)` and `cancel` may be called from any thread; `schedule`/`update_from_output`
from one thread only (the worker's).

Halting is `trm_core.halting` (one rule for trainer, evaluator and server), decided per row on the
host after one transfer per step. Fairness under groups: free slots are dealt one row per request
per round, oldest request first, so a K=256 group never starves single-row requests behind it,
and each group runs at most `max_running_rows` rows at once (its views run in waves, which is also
what makes early exit pay). A verified group with `first_wave` set runs its views in growing waves,
the next only once the last has halted unverified (service/engine/request.py). The queue's capacity
is counted in rows not yet admitted.

Priority (`Request.priority`, lower first, vLLM's convention) orders that dealing, with aging: a
request's effective priority improves by one level per `priority_aging_s` seconds of waiting. Since
every request ages at the same rate, comparing effective priorities at any instant is comparing
`priority x priority_aging_s + arrival_time`, a key that never changes: the queue stays a sorted
list, FIFO within a level falls out of the arrival time, and no request waits forever: one that
arrived at t is served before any request arriving after t + (its priority - the best priority)
x priority_aging_s. Aging was chosen over a share of slots per level because it needs no table of
levels and shares, keeps the pool fully used whichever levels are present, and gives each request a
bound on its wait that an operator can compute.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from service.engine.request import HALTING_MODES, Request, RequestStatus, RowResult
from service.engine.rulecheck import TaskRule
from service.engine.step_times import StepTimes
from trm_core.halting import halt_reason
from trm_core.tasks.arc_vote import sigmoid

__all__ = ["Scheduler", "SchedulerOutput", "AdmittedRow", "ModelOutput", "StepReport", "SchedulerStats",
           "QueueFullError", "Request", "RequestStatus", "RowResult", "HALTING_MODES"]

logger = logging.getLogger(__name__)

PRIORITY_AGING_S = 1.0  # seconds of waiting worth one priority level


class QueueFullError(RuntimeError):
    """The wait queue cannot take the request's rows; retry later (HTTP 429)."""

    def __init__(self, needed: int, depth: int, capacity: int) -> None:
        super().__init__(f"queue full: {depth} of {capacity} rows waiting, request needs {needed}")
        self.needed, self.depth, self.capacity = needed, depth, capacity


@dataclass(frozen=True)
class AdmittedRow:
    """A row that joins the pool before the next step: the runner resets its slot with these inputs."""

    slot: int
    inputs: torch.Tensor  # int [seq_len], CPU
    puzzle_id: int


@dataclass
class SchedulerOutput:
    """What `schedule()` decided for the next step (plain data)."""

    admitted: list[AdmittedRow]  # rows to reset before stepping
    finished: list[Request]  # left without stepping (cancelled, timed out)
    num_rows: int  # rows to step: the prefix of the pool that holds every running row


@dataclass
class ModelOutput:
    """The runner's output for one step, on the host (the one sync per step)."""

    q_halt: list[float]  # [num_rows]
    preds: torch.Tensor  # int [num_rows, seq_len] argmax tokens, CPU
    # [num_rows] the batched rule check (service/engine/rulecheck.py): False rules out an `accept`
    # that is a TaskRule; None: no batched check, `accept` decides every verified row
    passed: list[bool] | None = None


@dataclass
class StepReport:
    """What one engine step did, for metrics and benchmarks."""

    num_running: int  # rows holding a request during the step
    num_slots: int
    duration_s: float  # wall time of reset + model step + transfer
    finished: list[Request]  # every request finished in this iteration (halted or evicted)


@dataclass
class SchedulerStats:
    num_waiting: int  # rows not yet admitted
    num_running: int  # rows in slots
    num_slots: int
    num_steps: int  # model steps taken
    num_finished: int  # requests finished
    occupancy_sum: float  # sum over steps of running/slots; mean = occupancy_sum / num_steps
    busy_s: float  # wall time spent in model steps
    num_rows_finished: int = 0  # rows that left the pool (halted or evicted)
    row_steps_sum: int = 0  # steps those rows took

    @property
    def mean_occupancy(self) -> float:
        return self.occupancy_sum / self.num_steps if self.num_steps else 0.0


@dataclass(eq=False)
class _Row:
    """A slot's occupant: one view of one request."""

    request: Request
    view: int
    steps: int = 0
    last: list[int] | None = None  # previous step's tokens (stall detection)
    unchanged: int = 0  # consecutive steps with the same answer
    trajectory: list[list[int]] = field(default_factory=list)
    trajectory_q_halt: list[float] = field(default_factory=list)


class Scheduler:
    """Slot pool, bounded wait queue and halting bookkeeping for one model (no model inside).

    Args:
        num_slots: rows in the carry (the maximum batch).
        max_queue: rows allowed to wait; more raise QueueFullError.
        batching: "continuous" admits into free slots between any two steps; "request" admits only
            into an empty pool and runs that batch until every row has finished (the baseline).
        max_wait_s: when the pool is empty and fewer rows wait than there are slots, hold the
            first step this long after the oldest arrival so that a batch can form.
        seq_len: the model's sequence length; requests of another length are refused.
        stall_steps: > 0 halts a `verified` row whose answer has not changed for this many steps
            (halt_reason "stalled"): it would otherwise spend its whole budget on an answer it keeps.
        priority_aging_s: seconds of waiting that improve a request's priority by one level (module doc).
    """

    def __init__(self, num_slots: int, max_queue: int, *, batching: str = "continuous", max_wait_s: float = 0.0,
                 seq_len: int | None = None, stall_steps: int = 0,
                 priority_aging_s: float = PRIORITY_AGING_S) -> None:
        if batching not in ("continuous", "request"):
            raise ValueError(f"batching={batching!r}; use 'continuous' or 'request'")
        if priority_aging_s <= 0:
            raise ValueError(f"priority_aging_s={priority_aging_s}; must be > 0")
        self.num_slots, self.max_queue, self.batching, self.max_wait_s = num_slots, max_queue, batching, max_wait_s
        self.seq_len, self.stall_steps, self.priority_aging_s = seq_len, stall_steps, priority_aging_s
        self.requests: dict[str, Request] = {}  # every unfinished request by id
        self.waiting: list[Request] = []  # no row admitted yet, in service order (`order_key`)
        self.active: list[Request] = []  # some row admitted, more to run or running, in service order
        self.running: list[_Row | None] = [None] * num_slots  # slot -> row
        self._num_waiting_rows = 0
        self._pending_cancels: list[tuple[str, RequestStatus]] = []
        self._lock = threading.Lock()  # guards requests, waiting, _pending_cancels (cross-thread)
        self._num_steps = self._num_finished = self._num_rows_finished = self._row_steps_sum = 0
        self._occupancy_sum = self._busy_s = 0.0
        self.step_times = StepTimes(num_slots)  # seconds per step by rows stepped (the deadline estimate's)

    # ---- requests in (any thread) -----------------------------------------------------------
    def add_request(self, request: Request) -> None:
        self.add_requests([request])

    def add_requests(self, requests: Iterable[Request]) -> None:
        """Queue requests all-or-nothing: either every row fits in the queue or QueueFullError."""
        requests = list(requests)
        for r in requests:
            if self.seq_len is not None and r.seq_len != self.seq_len:
                raise ValueError(f"request {r.request_id}: inputs shape {tuple(r.inputs.shape)}, "
                                 f"expected ({self.seq_len},) per row")
        needed = sum(r.num_views for r in requests)
        with self._lock:
            if self._num_waiting_rows + needed > self.max_queue:
                raise QueueFullError(needed, self._num_waiting_rows, self.max_queue)
            dup = [r.request_id for r in requests if r.request_id in self.requests]
            if dup or len({r.request_id for r in requests}) != len(requests):
                raise ValueError(f"duplicate request ids: {dup or [r.request_id for r in requests]}")
            for r in requests:
                r.status = RequestStatus.WAITING
                self.requests[r.request_id] = r
                bisect.insort_right(self.waiting, r, key=self.order_key)  # after equal keys: FIFO
            self._num_waiting_rows += needed

    def order_key(self, r: Request) -> float:
        """Service order: lower first. Priority aged by waiting time, as a constant key (module doc)."""
        return r.priority * self.priority_aging_s + r.arrival_time

    def rows_ahead(self, priority: int, now: float | None = None) -> int:
        """Unadmitted rows that would be served before a request of `priority` arriving `now` (the
        deadline estimate's queue: a request does not wait for lower-priority rows)."""
        now = time.monotonic() if now is None else now
        key = priority * self.priority_aging_s + now
        with self._lock:
            return sum(r.num_unadmitted for group in (self.active, self.waiting) for r in group
                       if self.order_key(r) <= key)

    def cancel(self, request_id: str, status: RequestStatus = RequestStatus.FINISHED_CANCELLED) -> bool:
        """Finish a request early. A waiting one leaves now (its callback fires here); a running one
        frees its slots before the next step (never mid-step). False when unknown or finished."""
        if not status.is_finished:
            raise ValueError(f"cancel needs a finished status, got {status.name}")
        with self._lock:
            r = self.requests.get(request_id)
            if r is None:
                return False
            if r.status != RequestStatus.WAITING:
                self._pending_cancels.append((request_id, status))
                return True
            self._drop_unlocked(r)
            self._finish_unlocked(r, status, time.monotonic())
        self.call_on_finish(r)
        return True

    def abort_all(self, status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> list[Request]:
        """Finish every unfinished request (shutdown, or a failed step), firing their callbacks.
        Call from the stepping thread."""
        with self._lock:
            victims = list(self.requests.values())
            self.requests.clear()
            self.waiting.clear()
            self.active.clear()
            self._num_waiting_rows = 0
            self._pending_cancels.clear()
            now = time.monotonic()
            for r in victims:
                self._release(r)
                self._finish_unlocked(r, status, now)
        for r in victims:
            self.call_on_finish(r)
        return victims

    # ---- one iteration (stepping thread) ----------------------------------------------------
    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def time_until_step(self, now: float | None = None) -> float | None:
        """0 to step now, > 0 to hold a partial first batch that long, None when there is nothing to do."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.active or self._pending_cancels:
                return 0.0
            if not self.waiting:
                return None
            if self._num_waiting_rows >= self.num_slots or self.max_wait_s <= 0:
                return 0.0
            first = min(r.arrival_time for r in self.waiting) + self.max_wait_s
            return max(0.0, min(first, min(r.deadline for r in self.waiting)) - now)

    def schedule(self, now: float | None = None) -> SchedulerOutput:
        """Decide who leaves and who joins before the next step.

        NOTE: this is the one idea of the service. Rows halt independently, so there is no batch
        boundary: cancelled and timed-out requests leave here (halted rows already left in
        `update_from_output`), and waiting rows take the free slots, lowest slot first so that the
        stepped prefix of the pool stays short at low load.
        """
        now = time.monotonic() if now is None else now
        finished: list[Request] = []
        admitted: list[AdmittedRow] = []
        with self._lock:
            # 1. Cancellations requested since the last step.
            for request_id, status in self._pending_cancels:
                r = self.requests.get(request_id)
                if r is not None:
                    self._drop_unlocked(r)
                    finished.append(self._finish_unlocked(r, status, now))
            self._pending_cancels.clear()
            # 2. Deadlines, waiting and running alike.
            for r in [r for r in self.requests.values() if r.deadline <= now]:
                self._drop_unlocked(r)
                finished.append(self._finish_unlocked(r, RequestStatus.FINISHED_TIMEOUT, now))
            # 3. Admission. Request-level batching admits only into an empty pool.
            free = [slot for slot, row in enumerate(self.running) if row is None]
            if free and (self.batching == "continuous" or len(free) == self.num_slots):
                admitted = self._admit_unlocked(free, now)
        occupied = [slot for slot, row in enumerate(self.running) if row is not None]
        return SchedulerOutput(admitted=admitted, finished=finished, num_rows=occupied[-1] + 1 if occupied else 0)

    def _admit_unlocked(self, free: list[int], now: float) -> list[AdmittedRow]:
        """Deal free slots one row per request per round, in service order (see module doc)."""
        admitted: list[AdmittedRow] = []
        free.reverse()  # pop() from the end = lowest slot first
        while free:
            eligible = [r for r in self.active if r.num_unadmitted and self._under_cap(r)]
            candidates = list(heapq.merge(eligible, self.waiting[:len(free)], key=self.order_key))[:len(free)]
            if not candidates:
                break
            for r in candidates:
                if r.status == RequestStatus.WAITING:
                    self.waiting.remove(r)
                    bisect.insort_right(self.active, r, key=self.order_key)
                    r.status, r.admitted_time = RequestStatus.RUNNING, now
                slot = free.pop()
                view = r.next_view
                r.next_view += 1
                self._num_waiting_rows -= 1
                r.slots.append(slot)
                self.running[slot] = _Row(r, view)
                admitted.append(AdmittedRow(slot, r.view_inputs(view), r.puzzle_id))
        return admitted

    @staticmethod
    def _under_cap(r: Request) -> bool:
        """May the group admit another row now: under its running-rows cap and inside its current wave."""
        return (r.max_running_rows is None or len(r.slots) < r.max_running_rows) and r.next_view < r.wave_end

    def update_from_output(self, sched: SchedulerOutput, output: ModelOutput | None,
                           now: float | None = None) -> list[Request]:
        """Advance every running row by one step, let halted rows leave, and return the requests
        (groups) that finished. Callbacks are the caller's (the engine fires them)."""
        if output is None:
            return []
        now = time.monotonic() if now is None else now
        done: list[Request] = []
        settled: set[int] = set()  # ids of groups finished earlier in this loop (their status changes below)
        for slot in range(sched.num_rows):
            row = self.running[slot]
            if row is None:
                continue
            r = row.request
            row.steps += 1  # this step was computed for the row either way: it counts in row_steps
            r.row_steps += 1
            if id(r) in settled:
                continue  # its group already has its answer: the row leaves with it
            q = output.q_halt[slot]
            # Tokens leave the tensor only when something reads them: a learned/fixed row without
            # return_steps needs its answer once, when it halts.
            needs_tokens = r.return_steps or r.halting == "verified"
            tokens = output.preds[slot].tolist() if needs_tokens else None
            # Python (map back, decode, verify) only for rows the batched rule check let through
            may_pass = output.passed is None or not isinstance(r.accept, TaskRule) or output.passed[slot]
            answer = None if tokens is None or not (may_pass or r.return_steps) else self._map_back(r, row.view, tokens)
            verified = r.halting == "verified" and may_pass and r.accept(answer)  # type: ignore[misc]
            if r.return_steps:
                row.trajectory.append(answer)  # type: ignore[arg-type]
                row.trajectory_q_halt.append(q)
            reason = halt_reason(q, row.steps, r.max_steps, mode=r.halting, verified=verified)
            if reason is None and self.stall_steps and r.halting == "verified":
                row.unchanged = row.unchanged + 1 if tokens == row.last else 0
                row.last = tokens
                if row.unchanged >= self.stall_steps:
                    reason = "stalled"
            if reason is None:
                continue
            if answer is None:
                answer = self._map_back(r, row.view, output.preds[slot].tolist())
            self._vacate(slot, row)
            r.rows.append(RowResult(row.view, answer, row.steps, q, reason, row.trajectory, row.trajectory_q_halt))
            if reason == "verified" or (not r.num_unadmitted and not r.slots):
                self._settle(r, winner=r.rows[-1] if reason == "verified" else None)
                settled.add(id(r))
                done.append(r)
            elif not r.slots and r.next_view >= r.wave_end:
                r.next_wave()  # the wave halted unverified: the next one joins at the next schedule()
        with self._lock:
            for r in done:
                self._drop_unlocked(r)
                self._finish_unlocked(r, RequestStatus.FINISHED_HALTED, now)
        return done

    def record_step(self, num_running: int, duration_s: float, num_rows: int | None = None) -> None:
        """Account one model step (the engine calls this after a step that ran). `num_rows` is the
        stepped prefix of the pool (what the step cost depends on; default `num_running`)."""
        self._num_steps += 1
        self._occupancy_sum += num_running / self.num_slots
        self._busy_s += duration_s
        self.step_times.record(num_rows if num_rows is not None else num_running, duration_s)

    def stats(self) -> SchedulerStats:
        with self._lock:
            return SchedulerStats(
                num_waiting=self._num_waiting_rows, num_running=sum(row is not None for row in self.running),
                num_slots=self.num_slots, num_steps=self._num_steps, num_finished=self._num_finished,
                occupancy_sum=self._occupancy_sum, busy_s=self._busy_s,
                num_rows_finished=self._num_rows_finished, row_steps_sum=self._row_steps_sum)

    @staticmethod
    def call_on_finish(r: Request) -> None:
        if r.on_finish is None:
            return
        try:
            r.on_finish(r)
        except Exception:  # a broken callback must not stop the pool; the request is finished anyway
            logger.exception("on_finish callback of request %s failed", r.request_id)

    # ---- internals ---------------------------------------------------------------------------
    def _settle(self, r: Request, winner: RowResult | None) -> None:
        """Fill in a finished group's result: the verified row, or the vote over its halted rows."""
        if winner is None:
            winner = _vote(r)
        r.answer, r.steps, r.q_halt_logit, r.halt_reason, r.view = (
            winner.answer, winner.steps, winner.q_halt_logit, winner.halt_reason, winner.view)
        r.trajectory, r.trajectory_q_halt = winner.trajectory, winner.trajectory_q_halt

    @staticmethod
    def _map_back(r: Request, view: int, tokens: list[int]) -> list[int]:
        return tokens if r.map_back is None or view == 0 else r.map_back(view, tokens)

    def _vacate(self, slot: int, row: _Row) -> None:
        self.running[slot] = None
        row.request.slots.remove(slot)
        self._num_rows_finished += 1
        self._row_steps_sum += row.steps

    def _release(self, r: Request) -> None:
        """Free every slot the request's rows hold (they leave unfinished)."""
        for slot in list(r.slots):
            row = self.running[slot]
            if row is not None and row.request is r:
                self._vacate(slot, row)
        r.slots.clear()

    def _drop_unlocked(self, r: Request) -> None:
        """Take a request out of every queue and slot (its unadmitted rows no longer count)."""
        if self.requests.pop(r.request_id, None) is None:
            return  # already dropped
        if r.status == RequestStatus.WAITING and r in self.waiting:
            self.waiting.remove(r)
        if r in self.active:
            self.active.remove(r)
        self._num_waiting_rows -= r.num_unadmitted
        self._release(r)

    def _finish_unlocked(self, r: Request, status: RequestStatus, now: float) -> Request:
        r.status, r.finished_time = status, now
        self._num_finished += 1
        return r


def _vote(r: Request) -> RowResult:
    """The group's answer when no row was verified: pooled votes over mapped-back answers."""
    if len(r.rows) == 1:
        return r.rows[0]
    pooled: dict[tuple[int, ...], list] = {}  # answer -> [first row, votes, sum of confidences]; insertion order
    for row in r.rows:
        entry = pooled.setdefault(tuple(row.answer), [row, 0, 0.0])
        entry[1] += 1
        entry[2] += sigmoid(row.q_halt_logit) if not math.isnan(row.q_halt_logit) else 0.0
    ranked = sorted(pooled.values(), key=lambda e: (
        -(r.accept is not None and r.accept(e[0].answer)), -e[1], -e[2] / e[1]))  # stable: ties keep arrival order
    return ranked[0][0]
