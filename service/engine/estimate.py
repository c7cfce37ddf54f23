"""How long until a request would finish, from measured step time and the rows ahead of it.

Two decisions use it, both taken before a request's rows are queued:

- Deadline-aware admission (Triton's queue policy): a request whose estimated finish lies past
  its deadline is refused at once with 429 + Retry-After instead of being queued to time out (at
  0.5 s deadlines and 40 clients, 1,576 requests answered 504 against 24 answered 200: rows that
  could not make it held slots that rows which could were waiting for). A request that could not
  meet its deadline even on an idle pool is admitted: the client asked for that budget, and
  refusing it would only make it retry.
- Retry-After of a 429: when the work ahead of the request will have drained. The former
  estimate (occupancy sum x slots / finished requests) divided the steps of every running row by
  the one row finished so far and said 36 s at load onset where the real p99 was 3.75 s.

The model (pure arithmetic on stats snapshots, so it is tested without a server): a pool step
takes what the last seconds' steps took (`recent_step_s` over `recent_rows` rows on average),
scaled up linearly when the pool will hold more rows than that (a CPU step's cost grows with its
rows; a step also has a fixed cost, which the measured time at the current occupancy includes).
Before there is a recent window, n rows cost n x the all-time time per row-step. Rows
leave the pool at `num_slots / (row_steps x step)` rows per second, where `row_steps` is the
measured mean steps a row holds a slot. A new request's last row gets a slot once the rows ahead
of it, minus one pool's worth, have left; it then runs its own expected steps, in a pool of
min(slots, rows ahead + its rows) rows. So at short deadlines admission keeps the pool small
enough for steps to be fast, instead of filling it with rows that will all time out.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.engine.scheduler import SchedulerStats

if TYPE_CHECKING:  # annotations only: the engine never imports the registry at run time
    from service.registry import ServedModel

RETRY_AFTER_MAX_S = 60
HEADROOM = 1.25  # shed when the estimate exceeds the budget / HEADROOM: step times jitter on a shared host
WINDOW_S = 3.0  # the "recent" in recent step time


@dataclass(frozen=True)
class Load:
    """A model's pool as the estimate sees it (plain numbers from one stats snapshot)."""

    num_waiting: int  # rows queued, not yet admitted
    num_running: int  # rows holding a slot
    num_slots: int
    row_step_s: float | None  # measured wall time per row per step; None before the first step
    row_steps: float | None  # measured mean steps a row held its slot; None before the first row left
    recent_step_s: float | None = None  # mean wall time of the steps of the last WINDOW_S seconds
    recent_rows: float | None = None  # mean rows those steps stepped

    @classmethod
    def of(cls, s: SchedulerStats, window: StepWindow | None = None) -> Load:
        row_steps_run = s.occupancy_sum * s.num_slots  # sum over steps of the rows stepped
        recent = window.observe(s) if window is not None else None
        return cls(num_waiting=s.num_waiting, num_running=s.num_running, num_slots=s.num_slots,
                   row_step_s=s.busy_s / row_steps_run if row_steps_run > 0 else None,
                   row_steps=s.row_steps_sum / s.num_rows_finished if s.num_rows_finished else None,
                   recent_step_s=recent[0] if recent else None, recent_rows=recent[1] if recent else None)

    def step_s(self, rows: int) -> float | None:
        """Wall time of one step over `rows` rows."""
        if self.recent_step_s is not None and self.recent_rows:
            return self.recent_step_s * max(1.0, rows / self.recent_rows)
        return rows * self.row_step_s if self.row_step_s is not None else None


class StepWindow:
    """Mean step time and rows per step over the last WINDOW_S seconds, from successive stats
    snapshots (cumulative sums differenced; no hook in the stepping loop)."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, int, float, float]] = deque()  # (time, steps, busy_s, row-steps)

    def observe(self, s: SchedulerStats, now: float | None = None) -> tuple[float, float] | None:
        now = time.monotonic() if now is None else now
        mark = (now, s.num_steps, s.busy_s, s.occupancy_sum * s.num_slots)
        if not self._marks or now - self._marks[-1][0] >= 0.1:
            self._marks.append(mark)
        while len(self._marks) > 2 and now - self._marks[1][0] >= WINDOW_S:
            self._marks.popleft()
        _, steps0, busy0, rows0 = self._marks[0]
        steps = s.num_steps - steps0
        if steps < 3:
            return None
        return (s.busy_s - busy0) / steps, (mark[3] - rows0) / steps


_WINDOWS: weakref.WeakKeyDictionary[object, StepWindow] = weakref.WeakKeyDictionary()


def window_of(scheduler: object) -> StepWindow:
    """The step window of one model's scheduler (created on first use, dropped with the scheduler)."""
    window = _WINDOWS.get(scheduler)
    if window is None:
        window = _WINDOWS[scheduler] = StepWindow()
    return window


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


def should_shed(load: Load, num_rows: int, steps: float, budget_s: float, default_row_steps: float) -> Shed | None:
    """A Shed when the request cannot finish within `budget_s` because of the rows ahead of it."""
    estimate = finish_s(load, num_rows, steps, default_row_steps)
    if estimate is None or estimate * HEADROOM <= budget_s:
        return None
    # Even at the all-time cost per row-step (a lower bound for a small pool) and no headroom: hopeless
    # on an idle pool too, so not a matter of load (see the module doc).
    alone = finish_s(Load(0, 0, load.num_slots, load.row_step_s, load.row_steps), num_rows, steps, default_row_steps)
    if alone is not None and alone > budget_s:
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


def check_deadline(served: ServedModel, num_rows: int, max_steps: int, halting: str, deadline: float) -> None:  # noqa: ARG001
    """Raise DeadlineUnmeetable when `served`'s queue makes the request miss `deadline` (monotonic time)."""
    load = Load.of(served.scheduler.stats(), window_of(served.scheduler))
    # A new row is priced at its full budget, whatever its halting mode: the measured mean steps per
    # row include rows evicted after a step or two, and a row that halts early only finishes sooner.
    shed = should_shed(load, num_rows, float(max_steps), deadline - time.monotonic(),
                       float(served.config.halt_max_steps))
    if shed is not None:
        raise DeadlineUnmeetable(served.name, served.task, num_rows, shed)


def queue_retry_after_s(served: ServedModel, num_rows: int) -> int:
    """Retry-After for a full queue: when the rows ahead of a request of `num_rows` rows have drained."""
    load = Load.of(served.scheduler.stats(), window_of(served.scheduler))
    return retry_after_s(finish_s(load, num_rows, 0.0, float(served.config.halt_max_steps)))
