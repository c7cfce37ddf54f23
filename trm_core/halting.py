"""Inference halting policies: which rows are done after a step.

Each returns a bool [B] mask and never syncs with the host, so a scheduler can combine them
(`|`) and read the mask once per step. Training-time halting (q_halt > 0 with random exploration,
TRM_SPEC.md §5) lives in training/, because it changes what the model learns, not what it serves.

NOTE: the original never halts early at evaluation (every row runs halt_max_steps). `learned_halt`
is the product's choice: the model's own halting head decides, capped by `max_steps`.
"""

from __future__ import annotations

import torch

from .model import Carry, StepOutput


def learned_halt(out: StepOutput, carry: Carry, max_steps: int) -> torch.Tensor:
    """Halt where the Q-head predicts the answer is right (sigmoid(q_halt) > 0.5), or at `max_steps`."""
    return (out.q_halt_logits > 0) | (carry.steps >= max_steps)


def fixed_halt(carry: Carry, num_steps: int) -> torch.Tensor:
    """Halt after exactly `num_steps` steps (the original's evaluation: num_steps = halt_max_steps)."""
    return carry.steps >= num_steps


def budget_halt(carry: Carry, budgets: torch.Tensor) -> torch.Tensor:
    """Halt each row at its own step budget (int [B]), e.g. a per-request `max_steps`."""
    return carry.steps >= budgets.to(carry.steps.device)
