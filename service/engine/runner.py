"""The model runner: the one place that touches the model and the device (vLLM v1's GPUModelRunner).

It owns the slot pool's carry and the host staging buffers, and turns a `SchedulerOutput` (plain
data: which slots to reset with which inputs, how many rows to step) into a `ModelOutput` (plain
data on the host: q_halt per row and the argmax tokens). Device work lives here and nowhere else:
pinned staging buffers on CUDA, and the step itself. The Scheduler never sees a tensor on a device.

Only the occupied prefix of the pool is stepped (rows beyond it are idle), so at low load a step
costs what its live rows cost. How that prefix is stepped is the device's stepper (service/engine/stepper.py):
in chunks of a few rows on CPU, CUDA graphs per row-count bucket on CUDA.

One synchronisation per step: q_halt (float32 bits), the argmax tokens and the verified-halting
rule check per row (service/engine/rulecheck.py) are packed into one int32 tensor on the device
and come back in one copy (on CUDA: non_blocking into a pinned buffer, then one event wait).
"""

from __future__ import annotations

import torch

from service.engine.device import on_device
from service.engine.rulecheck import RowCheck, row_check_for
from service.engine.scheduler import ModelOutput, SchedulerOutput
from service.engine.stepper import make_stepper, prepare_model
from trm_core import TRM, Carry, StepOutput

__all__ = ["ModelRunner"]


class ModelRunner:
    """Carry + staging buffers for `num_slots` rows of one model (in eval mode).

    `model` is the registry's and stays as it is; the runner steps `prepare_model(model)` (on CUDA a
    bfloat16 copy sharing the puzzle table). `row_check` is the verified-halting check run on the
    device (default: the model's task's, None for none).
    """

    def __init__(self, model: TRM, num_slots: int, *, cpu_chunk_rows: int = 0, cuda_graphs: bool = True,
                 row_check: RowCheck | None | str = "task") -> None:
        self.model = prepare_model(model.eval())
        self.num_slots = num_slots
        self.device = model.device
        self.row_check = row_check_for(model.config) if row_check == "task" else row_check
        with on_device(self.device):
            self.stepper = make_stepper(self.model, num_slots, cpu_chunk_rows=cpu_chunk_rows,
                                        cuda_graphs=cuda_graphs)
        self._alloc()

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    def graph_report(self) -> dict[str, list[int]] | None:
        """CUDA graphs per row bucket ({"captured": [...], "fallback": [...]}), None when not used."""
        report = getattr(self.stepper, "report", None)
        return report() if report is not None and getattr(self.stepper, "use_graphs", False) else None

    def _alloc(self) -> None:
        """Carry and host staging buffers, allocated once; rows are reset in place with masks."""
        cfg, B = self.model.config, self.num_slots
        with torch.inference_mode(), on_device(self.device):
            self.carry: Carry = self.model.empty_carry(B)
        pin = self.device.type == "cuda"  # pinned host memory: the copies below can overlap on CUDA
        self._stage_rows = torch.zeros(B, dtype=torch.bool, pin_memory=pin)
        self._stage_inputs = torch.zeros(B, cfg.seq_len, dtype=torch.int32, pin_memory=pin)
        self._stage_pids = torch.zeros(B, dtype=torch.int32, pin_memory=pin)
        # the step's results, packed: [tokens (L) | q_halt as float32 bits | rule check passed]
        self._stage_out = torch.zeros(B, cfg.seq_len + 2, dtype=torch.int32, pin_memory=pin) if pin else None
        self._copied = torch.cuda.Event() if pin else None

    def reset(self) -> None:
        """A fresh carry, e.g. after a failed step (its tensors may be half-written)."""
        self._alloc()

    def execute(self, sched: SchedulerOutput, *, rule_check: bool = True) -> ModelOutput | None:
        """Reset the admitted rows and run one model step over the occupied prefix of the pool.

        `rule_check`: run the batched verified-halting check (the engine says whether a running row
        needs it; when none does the step skips its kernels)."""
        n = sched.num_rows
        if n == 0:
            return None
        with torch.inference_mode(), on_device(self.device):
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
            check = self.row_check if rule_check else None
            host = self._to_host(self._pack(view.inputs, out, check))  # the one host sync of the step
            if sched.admitted:  # only now: a non_blocking copy from pinned memory may still have been pending
                self._stage_rows.zero_()
            if n == self.num_slots:
                self.carry = view
            else:  # write the stepped prefix back into the pool (rows >= n are idle and untouched)
                self.carry.copy_prefix_(view)
        L = self.seq_len
        return ModelOutput(q_halt=host[:, L].view(torch.float32).tolist(), preds=host[:, :L],
                           passed=host[:, L + 1].bool().tolist() if check is not None else None)

    @staticmethod
    def _pack(inputs: torch.Tensor, out: StepOutput, check: RowCheck | None) -> torch.Tensor:
        """int32 [n, L + 2] on the device: argmax tokens, q_halt's float32 bits, the rule check."""
        preds = out.logits.argmax(dim=-1).to(torch.int32)
        q_bits = out.q_halt_logits.float().contiguous().view(torch.int32)
        passed = check(inputs, preds).to(torch.int32) if check is not None else torch.zeros_like(q_bits)
        return torch.cat([preds, q_bits[:, None], passed[:, None]], dim=1)

    def _to_host(self, packed: torch.Tensor) -> torch.Tensor:
        """One device-to-host copy; on CUDA into the pinned buffer, then one wait on an event."""
        if self._stage_out is None:
            return packed.cpu()
        n = packed.shape[0]
        self._stage_out[:n].copy_(packed, non_blocking=True)
        self._copied.record(torch.cuda.current_stream(self.device))
        self._copied.synchronize()
        return self._stage_out[:n].clone()  # the buffer is overwritten by the next step

    def warmup(self, num_steps: int, *, self_check: bool = True) -> None:
        """Run `num_steps` steps on a full pool of padding (allocator, kernels), then leave it idle.

        With CUDA graphs every bucket is captured now, not at its first request, and checked against
        the eager step (`BucketedStep.capture_all`)."""
        with torch.inference_mode(), on_device(self.device):
            carry = self.model.empty_carry(self.num_slots)
            ones = torch.ones(self.num_slots, dtype=torch.bool, device=self.device)
            carry = self.model.reset_rows(carry, ones, carry.inputs, carry.puzzle_ids)
            for _ in range(num_steps):
                carry, out = self.stepper(carry)
                self._to_host(self._pack(carry.inputs, out, self.row_check))  # as a real step does
        capture_all = getattr(self.stepper, "capture_all", None)
        if capture_all is not None:  # CUDA graphs: every bucket now, not at its first request
            capture_all(self_check=self_check)
        self._alloc()
