"""Building blocks of the TRM network, in dependency order.

Each one computes exactly what the original `models/layers.py` computes
(docs/MODEL_SPEC.md, "layers and initialisation"):
weightless post-norm RMSNorm, fused SwiGLU, non-interleaved ("rotate_half") RoPE and plain
non-causal SDPA. Linear weights are stored in float32 and cast to the activation dtype in forward
(the original's `CastedLinear`), so one set of weights serves float32 on CPU and bfloat16 on CUDA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """JAX-style truncated normal whose *actual* std equals `std` (torch's version does not correct it)."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std).clip_(lower * comp_std, upper * comp_std)
    return tensor


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a gain over the last axis, computed in at least float32 (float64 stays float64)."""
    dtype = x.dtype
    x = x.to(torch.promote_types(dtype, torch.float32))
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)).to(dtype)


class CastedLinear(nn.Module):
    """Linear with truncated LeCun-normal init whose weight follows the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids, self.weight.to(dtype))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position, kept as buffers so no step allocates them."""

    def __init__(self, head_dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [L, head_dim], "rotate_half" layout
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, L, H, hd]; rotation in float32 as the original, result back in x's dtype."""
    dtype = x.dtype
    x = x.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # [L, 1, hd]
    return (x * cos + _rotate_half(x) * sin).to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        inter = -(round(expansion * dim * 2 / 3) // -256) * 256  # rounded up to a multiple of 256
        self.gate_up = CastedLinear(dim, 2 * inter)  # [gate | up]
        self.down = CastedLinear(inter, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Attention(nn.Module):
    """Non-causal multi-head attention, no mask: PAD positions are attended to, as in the original."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = CastedLinear(dim, 3 * dim)  # rows: [q heads | k heads | v heads]
        self.o = CastedLinear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3 * self.num_heads, self.head_dim)  # [B, L, 3H, hd]
        q, k, v = qkv.split(self.num_heads, dim=2)  # each [B, L, H, hd]
        if rope is not None:
            q, k = apply_rope(q, rope.cos, rope.sin), apply_rope(k, rope.cos, rope.sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, hd]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.o(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Post-norm block: token mixing (attention, or the MLP-t over the sequence axis), then a channel SwiGLU."""

    def __init__(self, dim: int, num_heads: int, expansion: float, total_len: int, mlp_t: bool, eps: float) -> None:
        super().__init__()
        self.eps = eps
        # NOTE: the MLP-t mixes positions with position-specific weights; its residual norm runs over
        # the *sequence* axis because it operates on the transposed tensor (docs/MODEL_SPEC.md, the block).
        self.mlp_t = SwiGLU(total_len, expansion) if mlp_t else None
        self.attn = None if mlp_t else Attention(dim, num_heads)
        self.mlp = SwiGLU(dim, expansion)

    def forward(self, h: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        if self.mlp_t is not None:
            h = h.transpose(1, 2)  # [B, D, L]
            h = rms_norm(h + self.mlp_t(h), self.eps).transpose(1, 2)  # back to [B, L, D]
        else:
            h = rms_norm(h + self.attn(h, rope), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)
