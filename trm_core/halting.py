"""The halting policy: which rows are done after a step. One function, used everywhere.

`halt_mask` is the single statement of the rule; the trainer (with its exploration minimum), the
evaluator and the serving scheduler all call it, on device tensors or on host arrays/scalars alike
(it only uses `>`, `>=`, `|` and `&`, so it never syncs with a device and works on numpy too).

Modes (the HTTP option `halting`):
- `learned`: the Q-head says the answer is right (q_halt_logit > 0, i.e. sigmoid > 0.5);
- `verified`: the answer passes the task's rule check (Sudoku, Maze); the caller passes `verified`;
- `fixed`: never early, only at the step budget (the original's evaluation, with budget = halt_max_steps).
Every mode halts at the budget (`steps >= max_steps`).

Training-time exploration (docs/MODEL_SPEC.md, "halting"): with some probability a row must first reach
a random minimum number of steps. That changes what the model learns, not what it serves, so the
random draw stays in training/ and reaches this function only as `min_steps`.

NOTE: the original never halts early at evaluation (every row runs halt_max_steps). `learned` at
serving time is the product's choice: the model's own halting head decides, capped by `max_steps`.
"""

from __future__ import annotations

from typing import Any

from .model import Carry, StepOutput

HALTING_MODES = ("learned", "verified", "fixed")


def halt_mask(q_halt_logits: Any, steps: Any, max_steps: Any, *, mode: str = "learned",
              verified: Any = None, min_steps: Any = None) -> Any:
    """True where a row halts after the step it just took.

    Args:
        q_halt_logits: the step's halting logits (tensor [B], array [B] or a float).
        steps: steps the rows have taken, this one included (same shape).
        max_steps: the budget (an int, or per row).
        mode: one of HALTING_MODES.
        verified: `verified` mode only: does each row's answer pass the rule check.
        min_steps: training exploration: rows may not halt before this many steps (0 = no minimum).
    """
    at_budget = steps >= max_steps
    early = _early(q_halt_logits, mode, verified)
    halted = at_budget if early is None else early | at_budget
    if min_steps is not None:
        halted = halted & (steps >= min_steps)
    return halted


def halt_reason(q_halt_logit: float, steps: int, max_steps: int, *, mode: str, verified: bool = False) -> str | None:
    """Why one row halts now ("verified" | "learned" | "budget"), or None when it goes on.

    The label of `halt_mask` for one row: an early halt is named after its mode, else the budget.
    """
    if _early(q_halt_logit, mode, verified):
        return mode
    return "budget" if steps >= max_steps else None


def _early(q_halt_logits: Any, mode: str, verified: Any) -> Any:
    """The early-halting condition of `mode` (None for `fixed`, which has none)."""
    if mode == "learned":
        return q_halt_logits > 0
    if mode == "verified":
        if verified is None:
            raise ValueError("halting mode 'verified' needs the rule check's result (verified=...)")
        return verified
    if mode == "fixed":
        return None
    raise ValueError(f"halting mode {mode!r}; use one of {HALTING_MODES}")


def learned_halt(out: StepOutput, carry: Carry, max_steps: int) -> Any:
    """Halt where the Q-head predicts the answer is right, or at `max_steps`."""
    return halt_mask(out.q_halt_logits, carry.steps, max_steps, mode="learned")


def fixed_halt(carry: Carry, num_steps: int) -> Any:
    """Halt after exactly `num_steps` steps (the original's evaluation: num_steps = halt_max_steps)."""
    return halt_mask(None, carry.steps, num_steps, mode="fixed")


def budget_halt(carry: Carry, budgets: Any) -> Any:
    """Halt each row at its own step budget (int [B]), e.g. a per-request `max_steps`."""
    return halt_mask(None, carry.steps, budgets.to(carry.steps.device), mode="fixed")
