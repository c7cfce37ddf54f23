"""One unit of work for the scheduler and its lifecycle status (vLLM's request.py, for ACT steps).

A `Request` is a tokenized puzzle plus its halting policy. It is a *group* of K rows, one per view
of the puzzle (vLLM's parallel sampling `n`, with a rule check instead of sampling): `inputs` is
[L] for one row or [K, L] for K views. The rows share one result. The scheduler fills in the result
(answer tokens in the puzzle's own frame, steps, halting reason, confidence, timestamps) and calls
`on_finish` exactly once.

How a group ends (docs/ARCHITECTURE.md, "groups of views"):
- `verified` halting: at the first row whose answer, mapped back (`map_back`), passes `accept`;
  the other rows leave before the next step. With `first_wave` = B the views run in waves that
  grow while no row is verified: views [0, B), then [B, 2B), [2B, 4B), ... up to K (each wave as
  many views as ran before it; 16, 16, 32, 64 for K = 128, B = 16); a wave starts once every row
  of the one before has halted. A view's rows do not interact with other rows, so a view computes
  the same answers in whichever wave it runs: a staged group finds an answer the all-at-once group
  also verifies, and stops paying for views once one is verified (docs/scheduling.md);
- otherwise when every row has halted; then the rows vote: identical mapped-back answers pool
  their votes, answers that pass `accept` (when given) rank first, then votes, then mean
  sigmoid(q_halt); ties keep arrival order.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trm_core.halting import HALTING_MODES

__all__ = ["HALTING_MODES", "Request", "RequestStatus", "RowResult"]


class RequestStatus(enum.IntEnum):
    """Ordered so that `status > RUNNING` means finished (as vLLM's RequestStatus)."""

    WAITING = 0
    RUNNING = 1
    FINISHED_HALTED = 2  # has an answer; `halt_reason` says why it stopped
    FINISHED_CANCELLED = 3  # the client went away or the caller gave up
    FINISHED_TIMEOUT = 4  # deadline passed before it halted
    FINISHED_ABORTED = 5  # shutdown or a failed step

    @property
    def is_finished(self) -> bool:
        return self > RequestStatus.RUNNING


@dataclass
class RowResult:
    """One halted row of a group (one view): its answer mapped back to the puzzle's frame."""

    view: int
    answer: list[int]
    steps: int
    q_halt_logit: float
    halt_reason: str
    trajectory: list[list[int]] = field(default_factory=list)  # mapped back, with return_steps
    trajectory_q_halt: list[float] = field(default_factory=list)


@dataclass(eq=False)
class Request:
    """A group of rows (one per view of one puzzle) that share one result; K = 1 is a plain row."""

    request_id: str
    inputs: torch.Tensor  # int [seq_len] (one row) or [K, seq_len] (K views; view 0 = as posted), CPU
    max_steps: int  # step budget per row (>= 1)
    halting: str = "learned"
    puzzle_id: int = 0
    accept: Callable[[list[int]], bool] | None = None  # does an answer (puzzle's frame) pass the rules?
    map_back: Callable[[int, list[int]], list[int]] | None = None  # (view, answer tokens) -> puzzle's frame
    max_running_rows: int | None = None  # rows of this group stepping at once (None: as many as fit)
    priority: int = 0  # lower is served first (vLLM's convention); the scheduler ages it (scheduler.py)
    first_wave: int | None = None  # verified halting: views of the first wave (module doc); None: no waves
    return_steps: bool = False  # keep the predicted tokens (and q_halt) after every step
    deadline: float = math.inf  # time.monotonic() after which the request is finished as TIMEOUT
    on_finish: Callable[[Request], None] | None = None  # called once, on the thread that finished it
    arrival_time: float = field(default_factory=time.monotonic)

    status: RequestStatus = RequestStatus.WAITING
    admitted_time: float | None = None
    finished_time: float | None = None
    # the result (the winning row's, for a group)
    steps: int = 0
    answer: list[int] | None = None  # predicted tokens at the halting step, in the puzzle's frame
    q_halt_logit: float = math.nan
    halt_reason: str | None = None  # "learned" | "verified" | "budget" when FINISHED_HALTED
    view: int = 0  # which view produced the answer
    trajectory: list[list[int]] = field(default_factory=list)
    trajectory_q_halt: list[float] = field(default_factory=list)  # q_halt logit after every step
    row_steps: int = 0  # ACT steps summed over every row of the group: the compute it cost
    # group bookkeeping (the scheduler's)
    slots: list[int] = field(default_factory=list)  # slots its running rows hold
    next_view: int = 0  # next view to admit
    wave_end: int = 0  # views below this may be admitted now (set in __post_init__, grown by the scheduler)
    rows: list[RowResult] = field(default_factory=list)  # halted rows, in halting order

    def __post_init__(self) -> None:
        if self.halting not in HALTING_MODES:
            raise ValueError(f"halting={self.halting!r}; use one of {HALTING_MODES}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps}; a request needs at least 1 step")
        if self.halting == "verified" and self.accept is None:
            raise ValueError("halting='verified' needs an accept(answer) callback")
        if self.inputs.dim() not in (1, 2) or (self.inputs.dim() == 2 and self.inputs.shape[0] < 1):
            raise ValueError(f"inputs must be [seq_len] or [views, seq_len]; got {tuple(self.inputs.shape)}")
        if self.num_views > 1 and self.map_back is None:
            raise ValueError("a request with several views needs map_back(view, answer)")
        if self.max_running_rows is not None and self.max_running_rows < 1:
            raise ValueError(f"max_running_rows={self.max_running_rows}; at least 1")
        if self.first_wave is not None and self.first_wave < 1:
            raise ValueError(f"first_wave={self.first_wave}; at least 1 (or None: no waves)")
        staged = self.first_wave is not None and self.halting == "verified"
        self.wave_end = min(self.num_views, self.first_wave) if staged else self.num_views  # type: ignore[type-var]

    def next_wave(self) -> None:
        """Open the next wave of views: as many as have run so far (the scheduler calls this once the
        current wave has halted without a verified row)."""
        self.wave_end = min(self.num_views, 2 * self.wave_end)

    @property
    def num_views(self) -> int:
        return 1 if self.inputs.dim() == 1 else self.inputs.shape[0]

    @property
    def seq_len(self) -> int:
        return self.inputs.shape[-1]

    def view_inputs(self, view: int) -> torch.Tensor:
        return self.inputs if self.inputs.dim() == 1 else self.inputs[view]

    @property
    def num_unadmitted(self) -> int:
        """Rows not yet given a slot (they count against the queue's capacity)."""
        return self.num_views - self.next_view

    @property
    def views_run(self) -> int:
        """Views that got a slot (a group that finished early never ran the rest)."""
        return self.next_view
