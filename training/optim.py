"""Optimizers and the learning-rate schedule of the original TRM pretrain.py, in pure torch.

- `AdamATan2`: the update of the `adam-atan2` pip package (its CUDA kernel `adam_atan2_cuda_impl_`),
  written out so it runs on CPU too. Per parameter, with step t counted from 1:
      p <- p * (1 - lr * wd)                         # decoupled weight decay, applied first
      m <- m + (1 - b1) * (g - m)                    # lerp, i.e. b1 * m + (1 - b1) * g
      v <- v + (1 - b2) * (g*g - v)
      p <- p - (lr / (1 - b1^t)) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
  That is Adam with atan2(m, sqrt(v_hat)) in place of m / (sqrt(v_hat) + eps), the first-moment
  bias correction kept outside as in the package (not atan2(m_hat, sqrt(v_hat)) of the paper's
  pseudo-code): no epsilon, scale invariant. Unlike lucidrains' adam-atan2-pytorch it has no a/b
  scales (a=1, b=1) and decays before the moment update. tests/training/test_optim.py checks it
  against these formulas element by element.
- `SparseSignSGD`: the puzzle-embedding optimizer (`CastedSparseEmbeddingSignSGD_Distributed`):
  gathers (grad row, id) pairs from every rank, sums the gradients per unique id, then for those
  rows only: w <- w * (1 - lr * wd) - lr * sign(g).
- `lr_at`: linear warm-up from 0, then cosine down to lr_min_ratio * lr (constant when the ratio is 1).

Deliberately not here: fused/foreach kernels (a CUDA-speed concern the original's package covers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["AdamATan2", "SparseSignSGD", "lr_at"]


class AdamATan2(torch.optim.Optimizer):
    """Adam-atan2 with decoupled weight decay; same update as the `adam-atan2` package (see module doc)."""

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 1e-2) -> None:
        if lr < 0:
            raise ValueError(f"AdamATan2 lr={lr} must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamATan2 betas={betas} must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"AdamATan2 weight_decay={weight_decay} must be >= 0")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("AdamATan2.step does not take a closure")
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # step kept as a float32 tensor like the package, so state round-trips as tensors
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])  # host scalar, as the package reads it for the bias corrections
                bias1 = 1 - beta1**t
                bias2_sqrt = math.sqrt(1 - beta2**t)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                grad = p.grad
                p.mul_(1 - lr * wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.lerp_(grad * grad, 1 - beta2)
                denom = exp_avg_sq.sqrt() / bias2_sqrt
                p.add_(torch.atan2(exp_avg, denom), alpha=-lr / bias1)


class SparseSignSGD:
    """Sign-SGD with decoupled weight decay on the rows of a puzzle-embedding table used in a step.

    The table is a buffer (`model.puzzle_emb.weights`), not a Parameter: the model exposes the rows
    it looked up as the leaf `local_weights` [B, D] (requires grad) with their ids `local_ids` [B].
    With several ranks the (grad, id) pairs of all ranks are all-gathered first, so every rank
    applies the same update and the tables stay identical without a broadcast.
    """

    def __init__(self, puzzle_emb: nn.Module, lr: float, weight_decay: float) -> None:
        self.puzzle_emb = puzzle_emb
        self.lr = lr
        self.weight_decay = weight_decay

    def zero_grad(self) -> None:
        local = getattr(self.puzzle_emb, "local_weights", None)
        if isinstance(local, torch.Tensor):
            local.grad = None

    @torch.no_grad()
    def step(self) -> None:
        local = getattr(self.puzzle_emb, "local_weights", None)
        if not isinstance(local, torch.Tensor) or local.grad is None:
            return  # no puzzle rows used in this step (e.g. puzzle_emb_ndim=0)
        grad = local.grad  # [B_local, D]
        ids = self.puzzle_emb.local_ids  # [B_local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            all_grad = grad.new_empty((world * grad.shape[0], grad.shape[1]))
            all_ids = ids.new_empty((world * ids.shape[0],))
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in 2.13
            gather(all_grad, grad.contiguous())
            gather(all_ids, ids.contiguous())
            grad, ids = all_grad, all_ids
        sparse_step(self.puzzle_emb.weights, grad, ids, self.lr, self.weight_decay)

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}


def sparse_step(weights: torch.Tensor, grad: torch.Tensor, ids: torch.Tensor, lr: float, wd: float) -> None:
    """In place: for each unique id, w[id] <- w[id] * (1 - lr*wd) - lr * sign(sum of its grad rows)."""
    unique_ids, inverse = ids.long().unique(return_inverse=True)
    summed = grad.new_zeros((unique_ids.shape[0], grad.shape[1]))  # [U, D]
    summed.index_add_(0, inverse, grad.to(summed.dtype))
    rows = weights[unique_ids]
    rows.mul_(1.0 - lr * wd).add_(torch.sign(summed).to(rows.dtype), alpha=-lr)
    weights[unique_ids] = rows


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """LR of optimizer step number `step`, counted from 1 as the original (it increments the step
    counter before computing the LR, so the first step already has lr = base_lr / warmup_steps).
    Same formula as the original's cosine_schedule_with_warmup_lr_lambda with num_cycles=0.5."""
    if step < warmup_steps:
        return base_lr * float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))
