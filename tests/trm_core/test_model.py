"""Model semantics beyond the fixtures: per-row independence, resets, and other original configurations.

`reference_step` is an independent, deliberately naive re-statement of the original computation
(docs/MODEL_SPEC.md, layers and recursion: separate q/k/v, explicit softmax attention, loops instead of fused ops). Comparing
TRM against it over configurations the fixtures do not cover (widths, cycle counts, prefix lengths,
puzzle vectors wider than one position, each position encoding) shows nothing is special-cased.
"""

from __future__ import annotations

import math

import pytest
import torch

from trm_core import TRM, TRMConfig

from ..conftest import tiny_config, tiny_model


def _rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _swiglu(x, gate_up, down):
    inter = down.shape[1]
    h = x @ gate_up.T
    return (torch.nn.functional.silu(h[..., :inter]) * h[..., inter:]) @ down.T


def reference_step(m: TRM, z_H, z_L, inputs, ids):
    cfg, p = m.config, dict(m.named_parameters())
    D, P, H = cfg.hidden_size, cfg.prefix_len, cfg.num_heads
    x = p["embed_tokens.weight"][inputs.long()]
    if cfg.puzzle_emb_ndim:
        vec = m.puzzle_emb.weights[ids.long()]
        flat = torch.zeros(len(ids), P * D)
        flat[:, : vec.shape[1]] = vec
        x = torch.cat([flat.view(-1, P, D), x], 1)
    else:
        x = torch.cat([torch.zeros(len(ids), P, D), x], 1)
    if cfg.pos_encodings == "learned":
        x = 0.707106781 * (x + p["pos_embed.weight"])  # the original's literal, not 1/sqrt(2)
    x = x * math.sqrt(D)
    S = x.shape[1]

    def attention(h, i):
        hd = D // H
        wq, wk, wv = p[f"layers.{i}.attn.qkv.weight"].split(D)
        q, k, v = ((h @ w.T).view(-1, S, H, hd) for w in (wq, wk, wv))
        if cfg.pos_encodings == "rope":
            inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
            ang = torch.arange(S).float()[:, None] * inv[None]
            cos, sin = ang.cos().repeat(1, 2)[:, None], ang.sin().repeat(1, 2)[:, None]
            rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., : hd // 2]], -1)  # noqa: E731
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        out = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), v).reshape(-1, S, D)
        return out @ p[f"layers.{i}.attn.o.weight"].T

    def net(h, inj):
        h = h + inj
        for i in range(cfg.L_layers):
            if cfg.mlp_t:
                t = h.transpose(1, 2)
                h = _rms(t + _swiglu(t, p[f"layers.{i}.mlp_t.gate_up.weight"], p[f"layers.{i}.mlp_t.down.weight"]),
                         cfg.rms_norm_eps).transpose(1, 2)
            else:
                h = _rms(h + attention(h, i), cfg.rms_norm_eps)
            h = _rms(h + _swiglu(h, p[f"layers.{i}.mlp.gate_up.weight"], p[f"layers.{i}.mlp.down.weight"]),
                     cfg.rms_norm_eps)
        return h

    for _ in range(cfg.H_cycles):
        for _ in range(cfg.L_cycles):
            z_L = net(z_L, z_H + x)
        z_H = net(z_H, z_L)
    logits = z_H[:, P:] @ p["lm_head.weight"].T
    q = z_H[:, 0] @ p["q_head.weight"].T + p["q_head.bias"]
    return z_H, z_L, logits, q


CONFIGS = [
    dict(),
    dict(hidden_size=48, num_heads=3, H_cycles=3, L_cycles=1, puzzle_emb_len=5, pos_encodings="learned"),
    dict(hidden_size=16, num_heads=4, puzzle_emb_ndim=40, puzzle_emb_len=0, pos_encodings="none", L_layers=3),
    dict(mlp_t=True, pos_encodings="none", puzzle_emb_len=16, H_cycles=1, L_cycles=3),
    dict(puzzle_emb_ndim=0, puzzle_emb_len=0, seq_len=49, vocab_size=6, expansion=4.0, task="maze",
         grid_height=7, grid_width=7),
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "base")
def test_matches_reference_on_other_configs(overrides):
    model = tiny_model(seed=1, **overrides).double()
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, cfg.vocab_size, (3, cfg.seq_len), generator=g)
    ids = torch.randint(0, cfg.num_puzzle_identifiers, (3,), generator=g)
    carry = model.empty_carry(3)
    carry = model.reset_rows(carry, torch.ones(3, dtype=torch.bool), inputs, ids)
    z_H = model.H_init.double().expand(3, cfg.total_len, -1)
    z_L = model.L_init.double().expand(3, cfg.total_len, -1)
    for _ in range(3):
        carry, out = model.step(carry)
        z_H, z_L, logits, q = reference_step(model, z_H, z_L, inputs, ids)
        torch.testing.assert_close(carry.z_H, z_H, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(out.logits, logits, atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(out.q_halt_logits, q[:, 0].float(), atol=1e-6, rtol=1e-6)


def _random_batch(cfg: TRMConfig, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, cfg.vocab_size, (n, cfg.seq_len), generator=g),
            torch.randint(0, cfg.num_puzzle_identifiers, (n,), generator=g))


def test_rows_reset_at_different_steps_match_running_alone():
    model = tiny_model()
    inputs, ids = _random_batch(model.config, 6, seed=3)
    # slot schedule: (slot, step at which the puzzle enters); puzzles 4 and 5 reuse slots 0 and 1
    joins = {0: [(0, 0), (4, 3)], 1: [(1, 1), (5, 4)], 2: [(2, 2)], 3: [(3, 0)]}
    B, T = 4, 7
    carry = model.empty_carry(B)
    seen = {i: [] for i in range(6)}
    for t in range(T):
        rows = torch.zeros(B, dtype=torch.bool)
        new_inputs = torch.zeros(B, model.config.seq_len, dtype=torch.long)
        new_ids = torch.zeros(B, dtype=torch.long)
        for slot, plan in joins.items():
            for puzzle, start in plan:
                if start == t:
                    rows[slot], new_inputs[slot], new_ids[slot] = True, inputs[puzzle], ids[puzzle]
        carry = model.reset_rows(carry, rows, new_inputs, new_ids)
        carry, out = model.step(carry)
        for slot, plan in joins.items():
            started = [p for p in plan if p[1] <= t]
            if not started:
                continue  # the slot is still idle
            current = max(started, key=lambda p: p[1])
            seen[current[0]].append((out.logits[slot], out.q_halt_logits[slot], carry.steps[slot].item()))
    for puzzle in range(6):
        alone = model.reset_rows(model.empty_carry(1), torch.ones(1, dtype=torch.bool), inputs[puzzle:puzzle + 1],
                                 ids[puzzle:puzzle + 1])
        for k, (logits, q, steps) in enumerate(seen[puzzle]):
            alone, out = model.step(alone)
            assert steps == k + 1
            torch.testing.assert_close(logits, out.logits[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(q, out.q_halt_logits[0], atol=1e-5, rtol=1e-5)


def test_reset_rows_leaves_other_rows_untouched():
    model = tiny_model()
    inputs, ids = _random_batch(model.config, 3, seed=4)
    carry = model.reset_rows(model.empty_carry(3), torch.ones(3, dtype=torch.bool), inputs, ids)
    carry, _ = model.step(carry)
    carry, _ = model.step(carry)
    other_inputs, other_ids = _random_batch(model.config, 3, seed=5)
    rows = torch.tensor([False, True, False])
    after = model.reset_rows(carry, rows, other_inputs, other_ids)
    for name in ("z_H", "z_L", "inputs", "puzzle_ids", "steps", "input_embeddings"):
        old, new = getattr(carry, name), getattr(after, name)
        assert torch.equal(old[[0, 2]], new[[0, 2]]), name
    assert after.steps.tolist() == [2, 0, 2]
    assert torch.equal(after.inputs[1], other_inputs[1].int())
    assert torch.equal(after.z_H[1], model.H_init.expand_as(after.z_H[1]))


def test_reset_rows_rejects_wrong_shapes():
    model = tiny_model()
    carry = model.empty_carry(2)
    with pytest.raises(ValueError, match=r"reset_rows expects rows \[2\], inputs \[2, 81\]"):
        model.reset_rows(carry, torch.ones(2, dtype=torch.bool), torch.zeros(2, 80), torch.zeros(2))


def test_puzzle_embedding_changes_the_answer_and_gets_sparse_grad():
    model = tiny_model()
    inputs, _ = _random_batch(model.config, 2, seed=6)
    ids = torch.tensor([0, 1])
    carry = model.reset_rows(model.empty_carry(2), torch.ones(2, dtype=torch.bool), inputs[[0, 0]], ids)
    _, out = model.step(carry)
    assert not torch.allclose(out.logits[0], out.logits[1])  # same grid, different puzzle vector
    model.train()
    _, out = model.step(carry)
    out.logits.sum().backward()
    assert model.puzzle_emb.local_weights.grad.shape == (2, model.config.puzzle_emb_ndim)
    assert model.puzzle_emb.local_ids.tolist() == [0, 1]
    assert "puzzle_emb.weights" not in dict(model.named_parameters())


def test_training_gradient_flows_through_last_cycle_only():
    """With H_cycles=2 the first pass runs under no_grad: its inputs (the carry) never need grad."""
    model = tiny_model(H_cycles=2)
    model.train()
    inputs, ids = _random_batch(model.config, 2, seed=7)
    carry = model.reset_rows(model.empty_carry(2), torch.ones(2, dtype=torch.bool), inputs, ids)
    carry, out = model.step(carry)
    assert out.logits.requires_grad and not carry.z_H.requires_grad  # carry detached between steps
    out.logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("q_head"))


def test_config_json_round_trip_and_errors():
    cfg = tiny_config(mlp_t=True, pos_encodings="none")
    assert TRMConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown TRMConfig field"):
        TRMConfig.from_dict({**cfg.to_dict(), "hidden": 3})
    with pytest.raises(ValueError, match="hidden_size=100 is not divisible by num_heads=8"):
        TRMConfig(hidden_size=100, num_heads=8)
    with pytest.raises(ValueError, match="pos_encodings='alibi'"):
        TRMConfig(pos_encodings="alibi")
    with pytest.raises(ValueError, match="unknown preset"):
        TRMConfig.preset("sudoku-huge")


@pytest.mark.parametrize("preset,count", [("sudoku-mlp", 5_028_866), ("sudoku-att", 6_828_034),
                                          ("maze-att", 6_822_914), ("arc-att", 6_829_058)])
def test_paper_parameter_counts(preset, count):
    model = TRM(TRMConfig.preset(preset))
    assert model.num_trainable_params() == count
    assert model.num_puzzle_table_params() == 512  # one id for Sudoku/Maze; ARC's table comes from the data
