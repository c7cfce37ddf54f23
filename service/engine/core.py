"""One model's engine: a Scheduler (bookkeeping) and a ModelRunner (device work), composed.

`Engine.step()` is schedule -> execute -> update, then the finished requests' callbacks, outside
both (vLLM's EngineCore.step). The worker thread (service/engine/loop.py) drives it; `trm solve` and
the benchmarks drive it directly, with no server.
"""

from __future__ import annotations

import time

import torch

from service.engine.rulecheck import TaskRule
from service.engine.runner import ModelRunner
from service.engine.scheduler import (
    AdmittedRow,
    Request,
    RequestStatus,
    Scheduler,
    SchedulerOutput,
    StepReport,
)
from service.engine.step_times import row_buckets
from trm_core import TRM

__all__ = ["Engine"]


class Engine:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner) -> None:
        if scheduler.num_slots != runner.num_slots:
            raise ValueError(f"scheduler has {scheduler.num_slots} slots, runner {runner.num_slots}")
        self.scheduler, self.runner = scheduler, runner

    @classmethod
    def for_model(cls, model: TRM, num_slots: int, max_queue: int, *, runner_options: dict | None = None,
                  **scheduler_options) -> Engine:
        scheduler = Scheduler(num_slots, max_queue, seq_len=model.config.seq_len, **scheduler_options)
        return cls(scheduler, ModelRunner(model, num_slots, **(runner_options or {})))

    def step(self) -> StepReport:
        """One ACT step for every running row."""
        s = self.scheduler
        t0 = time.perf_counter()
        sched = s.schedule()
        num_running = sum(row is not None for row in s.running)
        # the batched rule check only when a running row halts by a TaskRule (service/engine/rulecheck.py)
        rule_check = any(row is not None and row.request.halting == "verified"
                         and isinstance(row.request.accept, TaskRule) for row in s.running)
        output = self.runner.execute(sched, rule_check=rule_check)
        duration = time.perf_counter() - t0
        halted = s.update_from_output(sched, output)
        if output is not None:
            s.record_step(num_running, duration, num_rows=sched.num_rows)
        finished = sched.finished + halted
        for r in finished:
            s.call_on_finish(r)
        return StepReport(num_running=num_running if output is not None else 0, num_slots=s.num_slots,
                          duration_s=duration, finished=finished)

    def run_until_idle(self, max_steps: int | None = None) -> int:
        """Step until nothing is queued or running (ignores max_wait_s holds); returns the steps taken."""
        n = 0
        while self.scheduler.has_unfinished() and (max_steps is None or n < max_steps):
            self.step()
            n += 1
        return n

    def recover(self) -> list[Request]:
        """After a failed step: abort what it held and rebuild the pool. Returns the aborted requests."""
        aborted = self.scheduler.abort_all(RequestStatus.FINISHED_ABORTED)
        self.runner.reset()
        return aborted

    def warmup(self, num_steps: int) -> None:
        """Warm the runner up (`num_steps` steps on a full pool), then, when `num_steps` > 0, seed the
        deadline estimate's step times: one real step at two row counts per row bucket (half the
        bucket plus one, and the whole bucket), so that the first burst after a cold start is priced
        from this device's own step times (service/engine/step_times.py)."""
        if self.scheduler.has_unfinished():
            raise RuntimeError("warmup must run before any request is added")
        self.runner.warmup(num_steps)
        if num_steps > 0:
            self._measure_buckets()

    def _measure_buckets(self) -> None:
        padding = torch.zeros(self.runner.seq_len, dtype=torch.int32)
        counts = sorted({n for b in row_buckets(self.scheduler.num_slots) for n in (b // 2 + 1, b)})
        for rows in counts:
            sched = SchedulerOutput(admitted=[AdmittedRow(slot, padding, 0) for slot in range(rows)], finished=[],
                                    num_rows=rows)
            t0 = time.perf_counter()
            self.runner.execute(sched)
            self.scheduler.step_times.record(rows, time.perf_counter() - t0)
        self.runner.reset()  # the pool is idle again, as warm-up leaves it
