"""How long until a request would finish, from measured step time and the rows ahead of it.

Two decisions use it, both taken before a request's rows are queued:

- Deadline-aware admission (Triton's queue policy): a request whose estimated finish lies past
  its deadline is refused at once with 429 + Retry-After instead of being queued to time out (at
  0.5 s deadlines and 40 clients, 1,576 requests answered 504 against 24 answered 200: rows that
  could not make it held slots that rows which could were waiting for). A request that could not
  meet its deadline even on an idle pool is admitted: the client asked for that budget, and
  refusing it would only make it retry. So is any request that finds the pool idle: there is no
  one to protect, and refusing every request after a few slow steps would leave the measured step
  times as they are, with nothing running to correct them.
- Retry-After of a 429: when the work ahead of the request will have drained. The former
  estimate (occupancy sum x slots / finished requests) divided the steps of every running row by
  the one row finished so far and said 36 s at load onset where the real p99 was 3.75 s.

The model (pure arithmetic on a stats snapshot and the measured step times, so it is tested without
a server): a step over n rows takes what steps over n rows took on this device, learned per row
bucket (service/engine/step_times.py: linear in rows on a CPU, flat per bucket on a GPU with CUDA
graphs; seeded by the start-up warm-up, so the first burst after a cold start is priced too). Rows
leave the pool at `num_slots / (row_steps x step)` rows per second, where `row_steps` is the
measured mean steps a row holds a slot. A new request's last row gets a slot once the rows ahead
of it (those the scheduler serves first: priority counts), minus one pool's worth, have left; it
then runs its own expected steps, in a pool of min(slots, rows ahead + its rows) rows. So at short
deadlines admission keeps the pool small enough for steps to be fast, instead of filling it with
rows that will all time out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from service.engine.scheduler import SchedulerStats
from service.engine.step_times import StepTimes, predict

if TYPE_CHECKING:  # annotations only: the engine never imports the registry at run time
    from service.registry import ServedModel

RETRY_AFTER_MAX_S = 60
HEADROOM = 1.25  # shed when the estimate exceeds the budget / HEADROOM: step times jitter on a shared host


@dataclass(frozen=True)
class Load:
    """A model's pool as the estimate sees it (plain numbers from one stats snapshot)."""

    num_waiting: int  # rows queued ahead, not yet admitted
    num_running: int  # rows holding a slot
    num_slots: int
    row_steps: float | None  # measured mean steps a row held its slot; None before the first row left
    step_times: dict[int, float] = field(default_factory=dict)  # measured seconds per step by rows stepped

    @classmethod
    def of(cls, s: SchedulerStats, step_times: StepTimes | None = None) -> Load:
        return cls(num_waiting=s.num_waiting, num_running=s.num_running, num_slots=s.num_slots,
                   row_steps=s.row_steps_sum / s.num_rows_finished if s.num_rows_finished else None,
                   step_times=step_times.snapshot() if step_times is not None else {})

    def step_s(self, rows: int) -> float | None:
        """Wall time of one step over `rows` rows; None before any step was measured."""
        return predict(self.step_times, rows, self.num_slots)


def finish_s(load: Load, num_rows: int, steps: float, default_row_steps: float) -> float | None:
    """Seconds from now until a request of `num_rows` rows of `steps` steps each finishes; None
    when nothing has been measured yet."""
    rows = load.num_waiting + load.num_running + num_rows
    step_s = load.step_s(min(load.num_slots, rows))
    if step_s is None:
        return None
    row_steps = load.row_steps if load.row_steps is not None else default_row_steps
    return max(0, rows - load.num_slots) / load.num_slots * row_steps * step_s + steps * step_s


def retry_after_s(seconds: float | None) -> int:
    """Whole seconds for a Retry-After header: at least 1, at most a minute."""
    if seconds is None or not math.isfinite(seconds):
        return 1
    return int(min(RETRY_AFTER_MAX_S, max(1, math.ceil(seconds))))


@dataclass(frozen=True)
class Shed:
    """The decision to refuse a request now because it would miss its deadline."""

    estimate_s: float  # estimated time to finish
    budget_s: float  # time left until its deadline
    retry_after_s: int  # when enough of the work ahead will have drained


def should_shed(load: Load, num_rows: int, steps: float, budget_s: float, default_row_steps: float,
                timeout_s: float | None = None) -> Shed | None:
    """A Shed when the request cannot finish within `budget_s` (the time left until its deadline)
    because of the rows ahead of it. `timeout_s` is the whole budget the request was given (default
    `budget_s`)."""
    estimate = finish_s(load, num_rows, steps, default_row_steps)
    if estimate is None or estimate * HEADROOM <= budget_s or load.num_waiting + load.num_running == 0:
        return None  # an idle pool has no one to protect, and its steps keep the measured times fresh
    # Without the rows ahead and without headroom: hopeless on an idle pool within its whole budget,
    # so not a matter of load (see the module doc). The whole budget, not what is left of it: time
    # lost before admission (a busy event loop, a burst parsed ahead of it) is load too.
    alone = finish_s(replace(load, num_waiting=0, num_running=0), num_rows, steps, default_row_steps)
    if alone is not None and alone > (budget_s if timeout_s is None else max(budget_s, timeout_s)):
        return None
    return Shed(estimate_s=estimate, budget_s=budget_s,
                retry_after_s=retry_after_s(estimate - budget_s / HEADROOM))


class DeadlineUnmeetable(RuntimeError):
    """The queue ahead makes the request's deadline unmeetable: refused before queueing (HTTP 429)."""

    def __init__(self, model: str, task: str, num_rows: int, shed: Shed) -> None:
        super().__init__(f"model {model} would finish this request in about {shed.estimate_s:.2f}s, past its "
                         f"deadline in {shed.budget_s:.2f}s (TRM_REQUEST_TIMEOUT_S); retry in about "
                         f"{shed.retry_after_s}s")
        self.model, self.task, self.num_rows, self.shed = model, task, num_rows, shed
        self.retry_after_s = shed.retry_after_s


def check_deadline(served: ServedModel, num_rows: int, max_steps: int, deadline: float, priority: int = 0,
                   timeout_s: float | None = None) -> None:
    """Raise DeadlineUnmeetable when `served`'s queue makes the request miss `deadline` (monotonic time).

    Only the queued rows the scheduler would serve before this request count (`rows_ahead`): a
    high-priority request is not refused for a queue of lower-priority rows it will overtake."""
    load = replace(Load.of(served.scheduler.stats(), served.scheduler.step_times),
                   num_waiting=served.scheduler.rows_ahead(priority))
    # A new row is priced at its full budget, whatever its halting mode: the measured mean steps per
    # row include rows evicted after a step or two, and a row that halts early only finishes sooner.
    shed = should_shed(load, num_rows, float(max_steps), deadline - time.monotonic(),
                       float(served.config.halt_max_steps), timeout_s)
    if shed is not None:
        raise DeadlineUnmeetable(served.name, served.task, num_rows, shed)


def queue_retry_after_s(served: ServedModel, num_rows: int) -> int:
    """Retry-After for a full queue: when the rows ahead of a request of `num_rows` rows have drained."""
    load = Load.of(served.scheduler.stats(), served.scheduler.step_times)
    return retry_after_s(finish_s(load, num_rows, 0.0, float(served.config.halt_max_steps)))
