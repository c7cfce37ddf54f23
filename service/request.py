"""One row of work for the scheduler and its lifecycle status (vLLM's request.py, for ACT steps).

A `Request` is a tokenized puzzle plus its halting policy; the scheduler fills in its results
(answer tokens, steps, halting reason, confidence, timestamps) and calls `on_finish` exactly once.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

HALTING_MODES = ("learned", "verified", "fixed")


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


@dataclass(eq=False)
class Request:
    """One row of work: a tokenized puzzle plus its halting policy. Results are filled in on finish."""

    request_id: str
    inputs: torch.Tensor  # int [seq_len], CPU
    max_steps: int  # step budget (>= 1)
    halting: str = "learned"
    puzzle_id: int = 0
    accept: Callable[[list[int]], bool] | None = None  # verified mode: does this answer pass the rules?
    return_steps: bool = False  # keep the predicted tokens after every step
    deadline: float = math.inf  # time.monotonic() after which the request is finished as TIMEOUT
    on_finish: Callable[[Request], None] | None = None  # called once, on the thread that finished it
    arrival_time: float = field(default_factory=time.monotonic)

    status: RequestStatus = RequestStatus.WAITING
    slot: int | None = None
    admitted_time: float | None = None
    finished_time: float | None = None
    steps: int = 0
    answer: list[int] | None = None  # predicted tokens at the halting step
    q_halt_logit: float = math.nan
    halt_reason: str | None = None  # "learned" | "verified" | "budget" when FINISHED_HALTED
    trajectory: list[list[int]] = field(default_factory=list)
    trajectory_q_halt: list[float] = field(default_factory=list)  # q_halt logit after each step (return_steps)

    def __post_init__(self) -> None:
        if self.halting not in HALTING_MODES:
            raise ValueError(f"halting={self.halting!r}; use one of {HALTING_MODES}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps}; a request needs at least 1 step")
        if self.halting == "verified" and self.accept is None:
            raise ValueError("halting='verified' needs an accept(answer) callback")
