"""Distributed setup: torchrun detection, process group, per-rank seeds, DDP wrap/unwrap.

This is our `parallelize.py`: the model never checks the rank, and one process is world size 1.
Vocabulary: "rank" = global process index, "local rank" = index on this host (the GPU it drives),
"world" = number of processes.

NOTE: DDP only hooks `forward()`, but a TRM is driven through `model.step(carry)`. `StepModule`
is a two-line adapter whose forward *is* one ACT step, so DDP's reducer sees every step.
Gradients are all-reduced as a SUM (not DDP's default mean): the loop divides the loss by the
global batch size, exactly as the original, so the summed gradient is the global-batch gradient.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "close_distributed", "is_main", "seed_for_rank", "StepModule",
           "wrap", "unwrap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"run.device={requested!r} but CUDA is not available; use run.device=cpu")
        return torch.device(f"cuda:{local_rank}") if requested == "cuda" else torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise ValueError(f"run.device={requested!r}; use auto, cpu, cuda or cuda:N")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (RANK set), else return world size 1.

    Backend: NCCL when the device is CUDA, gloo on CPU.
    """
    if "RANK" not in os.environ:
        return DistInfo(device=_pick_device(device, 0))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    dev = _pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    log.info("distributed: rank %d/%d (local %d) on %s via %s", rank, world, local_rank, dev,
             dist.get_backend())
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 or when not distributed: gates logging, checkpoints and export."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def seed_for_rank(seed: int, rank: int) -> int:
    """Seed of the per-rank torch RNG (anything local and random); shared streams use `seed` itself."""
    return seed + 1000003 * rank


class StepModule(nn.Module):
    """Adapter so DDP (and torch.compile) see one ACT step as `forward(carry)`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, carry):  # noqa: ANN001, ANN201 - Carry in, (Carry, StepOutput) out
        return self.model.step(carry)


def _sum_allreduce_hook(process_group, bucket):  # noqa: ANN001, ANN202 - DDP rejects string annotations
    """Sum gradients across ranks (DDP's default divides by world size; our loss is already /global batch)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """StepModule(model), inside DDP when distributed. Call the result with the carry for one step."""
    step_module = StepModule(model)
    if not info.is_distributed:
        return step_module
    # The puzzle table is a buffer updated identically on every rank by SparseSignSGD; syncing buffers
    # at every forward would move ~2 GB for ARC. H_init/L_init never change. (Newer torch renamed the flag.)
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    ddp = nn.parallel.DistributedDataParallel(
        step_module, device_ids=[info.device.index] if info.device.type == "cuda" else None, **no_sync)
    ddp.register_comm_hook(None, _sum_allreduce_hook)
    return ddp


def unwrap(module: nn.Module) -> nn.Module:
    """The bare TRM behind DDP / torch.compile / StepModule wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, StepModule):
            module = module.model
        else:
            return module
