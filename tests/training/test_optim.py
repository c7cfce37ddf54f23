"""Optimizers against straightforward reference formulas, and the LR schedule."""

from __future__ import annotations

import math

import torch

from tests.conftest import tiny_model
from training.optim import AdamATan2, SparseSignSGD, lr_at, sparse_step


def _reference_adam_atan2(p, grads, lr, b1, b2, wd):
    """The `adam-atan2` package's CUDA kernel (adam_atan2_cuda_impl_) as plain float64 formulas.

    NOTE: the package bias-corrects the first moment *outside* the atan2:
    (lr / (1 - b1^t)) * atan2(m, sqrt(v / (1 - b2^t))), not lr * atan2(m_hat, sqrt(v_hat)).
    """
    p = p.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_hat = v / (1 - b2**t)
        p = p - lr / (1 - b1**t) * torch.atan2(m, torch.sqrt(v_hat))
    return p, m, v


def test_adam_atan2_matches_reference_formula():
    torch.manual_seed(0)
    p0 = torch.randn(7, 5)
    grads = [torch.randn(7, 5) * (10.0 ** (i % 3 - 1)) for i in range(6)]
    grads[2][0, 0] = 0.0  # atan2(0, 0) = 0: no epsilon needed
    param = torch.nn.Parameter(p0.clone())
    opt = AdamATan2([param], lr=3e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for g in grads:
        param.grad = g.clone()
        opt.step()
    ref_p, ref_m, ref_v = _reference_adam_atan2(p0, grads, 3e-2, 0.9, 0.95, 0.1)
    torch.testing.assert_close(param.detach().double(), ref_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt.state[param]["exp_avg"].double(), ref_m, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(opt.state[param]["exp_avg_sq"].double(), ref_v, rtol=1e-5, atol=1e-9)
    assert float(opt.state[param]["step"]) == 6


def test_adam_atan2_first_step_is_scale_invariant():
    """Step 1: m = 0.1 g, sqrt(v_hat) = |g|, so the step is lr * 10 * atan(0.1) * sign(g) at any scale."""
    for scale in (1e-8, 1.0, 1e6):
        param = torch.nn.Parameter(torch.zeros(4))
        opt = AdamATan2([param], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
        param.grad = torch.tensor([1.0, -2.0, 3.0, -4.0]) * scale
        opt.step()
        expected = -0.1 * 10 * math.atan(0.1) * torch.tensor([1.0, -1.0, 1.0, -1.0])
        torch.testing.assert_close(param.detach(), expected)


def test_sparse_sign_sgd_updates_only_present_rows_with_summed_sign():
    weights = torch.ones(5, 3)
    grad = torch.tensor([[1.0, -1.0, 0.0], [-3.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    ids = torch.tensor([1, 1, 3])  # id 1 twice: summed grad [-2, 1, 1]
    sparse_step(weights, grad, ids, lr=0.1, wd=0.5)
    decayed = 1 - 0.1 * 0.5
    torch.testing.assert_close(weights[1], torch.tensor([decayed + 0.1, decayed - 0.1, decayed - 0.1]))
    torch.testing.assert_close(weights[3], torch.full((3,), decayed - 0.1))
    for untouched in (0, 2, 4):  # rows not in the batch keep their value (no decay either)
        torch.testing.assert_close(weights[untouched], torch.ones(3))


def test_sparse_sign_sgd_reads_the_models_local_rows():
    model = tiny_model()
    model.train()
    emb = model.puzzle_emb
    B = 3
    carry = model.empty_carry(B)
    inputs = torch.randint(1, model.config.vocab_size, (B, model.config.seq_len))
    ids = torch.zeros(B, dtype=torch.long)
    carry = model.reset_rows(carry, torch.ones(B, dtype=torch.bool), inputs, ids)
    _, out = model.step(carry)
    out.logits.float().pow(2).mean().backward()
    assert emb.local_weights is not None and emb.local_weights.grad is not None
    before = emb.weights.clone()
    expected = emb.weights.clone()
    sparse_step(expected, emb.local_weights.grad, emb.local_ids, lr=0.01, wd=0.1)
    opt = SparseSignSGD(emb, lr=0.01, weight_decay=0.1)
    opt.step()
    torch.testing.assert_close(emb.weights, expected)
    assert not torch.equal(emb.weights, before)


def test_lr_schedule_warmup_then_constant_or_cosine():
    assert lr_at(1, 1e-4, 2000, 65104) == 1e-4 / 2000  # the first step already has lr > 0
    assert lr_at(1000, 1e-4, 2000, 65104) == 0.5e-4
    assert lr_at(2000, 1e-4, 2000, 65104) == 1e-4
    assert lr_at(60000, 1e-4, 2000, 65104, min_ratio=1.0) == 1e-4  # the paper: constant after warm-up
    assert math.isclose(lr_at(100, 1.0, 0, 100, min_ratio=0.1), 0.1)  # cosine reaches the floor
    assert math.isclose(lr_at(50, 1.0, 0, 100, min_ratio=0.0), 0.5)
