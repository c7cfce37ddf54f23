"""Halting policies, the ACT loss on hand-checkable values, and the package's import layering."""

from __future__ import annotations

import math
import subprocess
import sys

import torch

from trm_core.halting import budget_halt, fixed_halt, learned_halt
from trm_core.loss import act_loss, log_stablemax
from trm_core.model import StepOutput

from ..conftest import tiny_model


def _carry_and_out(steps, q_halt):
    model = tiny_model()
    carry = model.empty_carry(len(steps))
    carry.steps = torch.tensor(steps, dtype=torch.int32)
    out = StepOutput(logits=torch.zeros(len(steps), 81, 11), q_halt_logits=torch.tensor(q_halt),
                     q_continue_logits=torch.zeros(len(steps)))
    return carry, out


def test_policies():
    carry, out = _carry_and_out([1, 2, 3, 16], [0.5, -0.1, -3.0, -2.0])
    assert learned_halt(out, carry, max_steps=16).tolist() == [True, False, False, True]
    assert learned_halt(out, carry, max_steps=3).tolist() == [True, False, True, True]
    assert fixed_halt(carry, 3).tolist() == [False, False, True, True]
    assert budget_halt(carry, torch.tensor([1, 5, 5, 20])).tolist() == [True, False, False, False]


def test_stablemax_values():
    x = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)  # s = [1, 2, 0.5] -> p = [1, 2, .5] / 3.5
    torch.testing.assert_close(log_stablemax(x), torch.log(torch.tensor([[1, 2, 0.5]], dtype=torch.float64) / 3.5))


def test_act_loss_per_row_mean_summed_and_halt_target():
    logits = torch.zeros(2, 3, 4)
    logits[0, :, 1] = 5.0  # row 0 predicts 1 everywhere: correct
    logits[1, :, 2] = 5.0  # row 1 predicts 2: wrong on its valid cell
    labels = torch.tensor([[1, 1, -100], [1, -100, -100]])
    out = StepOutput(logits=logits, q_halt_logits=torch.tensor([0.0, 0.0]), q_continue_logits=torch.zeros(2))
    loss, parts = act_loss(out, labels)
    p_right = math.log(6 / (6 + 3))  # s(5)=6, s(0)=1 x3
    p_wrong = math.log(1 / (6 + 3))
    expected_lm = -p_right + -p_wrong  # row means (over 2 and over 1 valid cells), summed
    assert parts["is_correct"].tolist() == [True, False]
    assert parts["cell_correct"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(parts["lm_loss"], torch.tensor(expected_lm, dtype=torch.float64))
    torch.testing.assert_close(parts["q_halt_loss"], torch.tensor(2 * math.log(2), dtype=torch.float32))
    torch.testing.assert_close(loss, parts["lm_loss"] + 0.5 * parts["q_halt_loss"])


def test_trm_core_imports_no_web_or_training_stack():
    code = ("import sys, trm_core, trm_core.halting, trm_core.loss, trm_core.cli; "
            "bad = [m for m in ('fastapi', 'training', 'service', 'uvicorn', 'yaml') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
