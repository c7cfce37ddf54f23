"""The model runner: the one place that touches the model and the device (vLLM v1's GPUModelRunner).

It owns the slot pool's carry and the host staging buffers, and turns a `SchedulerOutput` (plain
data: which slots to reset with which inputs, how many rows to step) into a `ModelOutput` (plain
data on the host: q_halt per row and the argmax tokens). Device work lives here and nowhere else:
pinned staging buffers on CUDA, and the step itself. The Scheduler never sees a tensor on a device.

Only the occupied prefix of the pool is stepped (rows beyond it are idle), so at low load a step
costs what its live rows cost. How that prefix is stepped is the device's stepper (service/engine/stepper.py):
in chunks of a few rows on CPU, CUDA graphs per row-count bucket on CUDA.
"""

from __future__ import annotations

import torch

from service.engine.scheduler import ModelOutput, SchedulerOutput
from service.engine.stepper import make_stepper, prepare_model
from trm_core import TRM, Carry

__all__ = ["ModelRunner"]


class ModelRunner:
    """Carry + staging buffers for `num_slots` rows of one model (in eval mode)."""

    def __init__(self, model: TRM, num_slots: int, *, cpu_chunk_rows: int = 0, cuda_graphs: bool = True) -> None:
        self.model = prepare_model(model.eval())
        self.num_slots = num_slots
        self.device = model.device
        self.stepper = make_stepper(self.model, num_slots, cpu_chunk_rows=cpu_chunk_rows, cuda_graphs=cuda_graphs)
        self._alloc()

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    def _alloc(self) -> None:
        """Carry and host staging buffers, allocated once; rows are reset in place with masks."""
        cfg, B = self.model.config, self.num_slots
        with torch.inference_mode():
            self.carry: Carry = self.model.empty_carry(B)
        pin = self.device.type == "cuda"  # pinned host memory: the copies below can overlap on CUDA
        self._stage_rows = torch.zeros(B, dtype=torch.bool, pin_memory=pin)
        self._stage_inputs = torch.zeros(B, cfg.seq_len, dtype=torch.int32, pin_memory=pin)
        self._stage_pids = torch.zeros(B, dtype=torch.int32, pin_memory=pin)

    def reset(self) -> None:
        """A fresh carry, e.g. after a failed step (its tensors may be half-written)."""
        self._alloc()

    def execute(self, sched: SchedulerOutput) -> ModelOutput | None:
        """Reset the admitted rows and run one model step over the occupied prefix of the pool."""
        n = sched.num_rows
        if n == 0:
            return None
        with torch.inference_mode():
            view = self.carry.prefix(n)
            if sched.admitted:
                for row in sched.admitted:
                    self._stage_rows[row.slot] = True
                    self._stage_inputs[row.slot].copy_(row.inputs)
                    self._stage_pids[row.slot] = row.puzzle_id
                dev = self.device
                view = self.model.reset_rows(view, self._stage_rows[:n].to(dev, non_blocking=True),
                                             self._stage_inputs[:n].to(dev, non_blocking=True),
                                             self._stage_pids[:n].to(dev, non_blocking=True))
            view, out = self.stepper(view)
            # The one host sync per step: the halting decision needs q_halt, the answers need tokens.
            q_halt = out.q_halt_logits.float().cpu().tolist()
            preds = out.logits.argmax(dim=-1).to(torch.int32).cpu()  # [n, L]
            if sched.admitted:  # only now: a non_blocking copy from pinned memory may still have been pending
                self._stage_rows.zero_()
            if n == self.num_slots:
                self.carry = view
            else:  # write the stepped prefix back into the pool (rows >= n are idle and untouched)
                self.carry.copy_prefix_(view)
        return ModelOutput(q_halt=q_halt, preds=preds)

    def warmup(self, num_steps: int) -> None:
        """Run `num_steps` steps on a full pool of padding (allocator, kernels), then leave it idle."""
        with torch.inference_mode():
            carry = self.model.empty_carry(self.num_slots)
            ones = torch.ones(self.num_slots, dtype=torch.bool, device=self.device)
            carry = self.model.reset_rows(carry, ones, carry.inputs, carry.puzzle_ids)
            for _ in range(num_steps):
                carry, out = self.stepper(carry)
                out.q_halt_logits.cpu()  # wait for the device, as a real step does
        capture_all = getattr(self.stepper, "capture_all", None)
        if capture_all is not None:  # CUDA graphs: every bucket now, not at its first request
            capture_all()
        self._alloc()
