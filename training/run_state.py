"""Resumable run checkpoints: safetensors for every tensor, JSON for counters and config. No pickle.

Layout of `<run>/checkpoint/` (written to a temporary sibling and renamed, so a kill mid-save leaves
the previous checkpoint intact):
- `model.safetensors`   live weights and buffers (incl. the puzzle table, which the EMA does not cover)
- `ema.safetensors`     EMA shadows of the trainable parameters
- `optim.safetensors`   dense-optimizer state, `<param name>/<state key>` (exp_avg, exp_avg_sq, step)
- `rank<r>.safetensors` per-rank loop state: the ACT carry, its labels and halted mask, the stream's
                        per-slot draw counters and the torch RNG state(s)
- `state.json`          step, wall time, world size, global batch size, the resolved config

Resuming with the same world size and global batch size continues bit-for-bit (the per-step random
draws are seeded by step, the data draws by (slot, count)). A different world size is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["CHECKPOINT_DIR", "save_tensors", "load_tensors", "optimizer_tensors", "load_optimizer_tensors",
           "write_checkpoint", "read_state", "has_checkpoint"]

CHECKPOINT_DIR = "checkpoint"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared/non-contiguous storage; clone to own contiguous memory on the CPU
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path),
              metadata=metadata)


def load_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state keyed by parameter name (stable across processes)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"{names[id(p)]}/{key}"] = t
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module,
                           tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    per_param: dict[str, dict[str, torch.Tensor]] = {}
    for full, t in tensors.items():
        name, key = full.rsplit("/", 1)
        if name not in params:
            raise KeyError(f"optimizer state for unknown parameter {name!r}; the checkpoint is from another model")
        per_param.setdefault(name, {})[key] = t
    for name, state in per_param.items():
        p = params[name]
        optimizer.state[p] = {k: (v.to(p.device) if k != "step" else v) for k, v in state.items()}


def write_checkpoint(run_dir: Path, files: dict[str, dict[str, torch.Tensor]], state: dict[str, Any],
                     rank: int, world_size: int, barrier: Any = None) -> None:
    """Write tensors files (main rank: shared files; every rank: its own `rank<r>` file) and state.json.

    `files` maps file stem -> tensors; rank 0 passes model/ema/optim and its rank file, others only
    their rank file. `barrier` (a callable) synchronises ranks between writing and the atomic rename.
    """
    tmp = run_dir / f"{CHECKPOINT_DIR}.tmp"
    final = run_dir / CHECKPOINT_DIR
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if barrier is not None:
        barrier()
    for stem, tensors in files.items():
        save_tensors(tensors, tmp / f"{stem}.safetensors")
    if barrier is not None:
        barrier()
    if rank == 0:
        (tmp / "state.json").write_text(json.dumps({**state, "world_size": world_size}, indent=2, sort_keys=True))
        old = run_dir / f"{CHECKPOINT_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    if barrier is not None:
        barrier()


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_DIR / "state.json").is_file()


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} has no checkpoint (train first with `trm train`)")
    return json.loads(path.read_text())
