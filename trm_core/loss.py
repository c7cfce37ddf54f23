"""The original ACT loss (models/losses.py `ACTLossHead` with stablemax cross-entropy).

lm_loss = sum over rows of (mean over valid cells of stablemax-CE in float64)
q_halt_loss = sum over rows of BCE-with-logits(q_halt, whole row correct)
loss = lm_loss + 0.5 * q_halt_loss
Sums, not means: the trainer divides by the *global* batch size so DDP's gradient all-reduce (a sum
across ranks) gives the same update as one process (docs/MODEL_SPEC.md, "loss and metrics").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import StepOutput

IGNORE_LABEL = -100


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log of stablemax: s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0, normalised (arXiv 2501.04697)."""
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-cell loss [B, L] in float64; 0 where `valid` is False."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    picked = logprobs.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def act_loss(out: StepOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The original training loss for one ACT step, summed over rows.

    Args:
        labels: int [B, L] target token ids, IGNORE_LABEL (-100) where a cell does not count.
    Returns:
        (loss, parts) with parts: lm_loss, q_halt_loss (scalars), is_correct bool [B] (every valid
        cell right), cell_correct float [B] (fraction of valid cells right), num_valid int [B].
    """
    labels = labels.to(out.logits.device)
    with torch.no_grad():
        valid = labels != IGNORE_LABEL
        num_valid = valid.sum(-1)
        hits = valid & (out.logits.argmax(-1) == labels)
        is_correct = hits.sum(-1) == num_valid
        cell_correct = hits.sum(-1) / num_valid.clamp_min(1)
    cell_loss = stablemax_cross_entropy(out.logits, labels, valid)
    lm_loss = (cell_loss / num_valid.clamp_min(1).unsqueeze(-1)).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(
        out.q_halt_logits, is_correct.to(out.q_halt_logits.dtype), reduction="sum")
    loss = lm_loss + 0.5 * q_halt_loss
    return loss, {"lm_loss": lm_loss, "q_halt_loss": q_halt_loss, "is_correct": is_correct,
                  "cell_correct": cell_correct, "num_valid": num_valid}
