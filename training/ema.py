"""Exponential moving average of the trainable weights, used for evaluation and export.

Same rule as the original `EMAHelper` (mu=0.999, updated after every optimizer step, no warm-up or
bias correction): shadow <- (1 - mu) * param + mu * shadow, over parameters that require grad.
`optim.ema_warmup=true` adds the usual warm-up for short runs (off by default, as the original).
Buffers (the puzzle-embedding table, H_init/L_init) are not averaged: `swapped_in` copies only the
parameters, so the live table is what evaluation and export see, as in the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    def __init__(self, model: nn.Module, rate: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate={rate} must be in [0, 1)")
        self.rate = rate
        self.warmup = warmup
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def rate_at(self, step: int) -> float:
        """The decay used after optimizer step `step` (1-based). With warm-up, min(rate, (1+t)/(10+t)):
        a short run's EMA then tracks the trained weights instead of staying near the initialisation
        (the original has no warm-up; its runs are 65k+ steps long)."""
        return min(self.rate, (1 + step) / (10 + step)) if self.warmup else self.rate

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        names, params = [], []
        for name, p in model.named_parameters():
            if name in self.shadow:
                names.append(name)
                params.append(p.detach())
        shadows = [self.shadow[n] for n in names]
        # shadow = mu * shadow + (1 - mu) * param, fused over all tensors (one kernel per dtype/device)
        torch._foreach_lerp_(shadows, params, 1.0 - self.rate_at(step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state mismatch: missing {missing}, unexpected {unexpected}")
        for name, t in state.items():
            if t.shape != self.shadow[name].shape:
                raise ValueError(f"EMA tensor {name}: shape {tuple(t.shape)} != {tuple(self.shadow[name].shape)}")
            self.shadow[name].copy_(t)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the averages (buffers untouched)."""
        params = dict(model.named_parameters())
        for name, t in self.shadow.items():
            params[name].copy_(t)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights into `model` (for evaluation), restoring the live ones after."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, t in backup.items():
                    params[name].copy_(t)
