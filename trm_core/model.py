"""The Tiny Recursive Model, one ACT (supervision) step at a time.

References: "Less is More: Recursive Reasoning with Tiny Networks" (arXiv 2510.04871) and its code,
SamsungSAILMontreal/TinyRecursiveModels @ e7b6871 (`models/recursive_reasoning/trm.py`), which this
file reproduces to float32 round-off (docs/MODEL_SPEC.md, "layers" and "recursion"; golden tests in tests/trm_core).

What is here: the carry (answer state z_H, latent z_L, per-row step counter, the row's inputs) and
`TRM.step`, which advances *every* row of a batch by one supervision step. What is not: halting
decisions (trm_core.halting at inference, training/ during training), the loss (trm_core.loss),
optimizers, data and HTTP. Keeping the step free of policy is what lets the trainer refill halted
rows with new examples and the server refill them with new requests, through the same function.

One deliberate difference from the original wrapper: its `forward` resets halted rows and replaces
their data in the same call; here that is `reset_rows`, a separate call, so a caller can restart any
subset of rows at any time (continuous batching) and the input embeddings of a row are computed once
at reset instead of at every step (at inference; training recomputes them because weights move).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from .config import TRMConfig
from .layers import Block, CastedEmbedding, CastedLinear, RotaryEmbedding, trunc_normal_


@dataclass
class Carry:
    """Per-row recursion state. Every tensor has the batch on axis 0."""

    z_H: torch.Tensor  # [B, P+L, D] answer state (the paper's y)
    z_L: torch.Tensor  # [B, P+L, D] latent reasoning state (the paper's z)
    steps: torch.Tensor  # int32 [B] supervision steps taken since the row's last reset
    inputs: torch.Tensor  # int32 [B, L] token ids of the row's puzzle
    puzzle_ids: torch.Tensor  # int32 [B] puzzle-embedding row of each puzzle
    # [B, P+L, D] scaled x, computed at reset: an inference cache, None in training (where the weights
    # move, so step() recomputes x) and never part of a training checkpoint.
    input_embeddings: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.z_H.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The carry's tensors by field name (the inference cache only when present)."""
        return {f.name: t for f in fields(self) if (t := getattr(self, f.name)) is not None}

    def prefix(self, n: int) -> Carry:
        """The first n rows, as views (no copy): a continuous-batching pool steps only its occupied prefix."""
        if n == self.batch_size:
            return self
        return Carry(**{name: t[:n] for name, t in self.tensors().items()})

    def copy_prefix_(self, src: Carry) -> None:
        """Write `src` into this carry's first `src.batch_size` rows, in place (rows beyond are untouched)."""
        n = src.batch_size
        for name, t in src.tensors().items():
            getattr(self, name)[:n].copy_(t)


@dataclass
class StepOutput:
    logits: torch.Tensor  # [B, L, V] answer logits for every token position
    q_halt_logits: torch.Tensor  # float32 [B]: > 0 means "this answer is right, stop"
    q_continue_logits: torch.Tensor  # float32 [B]: produced, unused by TRM (no_ACT_continue)


class PuzzleEmbedding(nn.Module):
    """The per-puzzle vector table, trained by a sparse sign-SGD optimizer instead of autograd.

    NOTE: `weights` is a buffer, not a Parameter, exactly as in the original: it is not in
    `model.parameters()`, not counted in the paper's parameter counts and not EMA'd. In training mode
    a step looks up its rows into a fresh leaf tensor `local_weights` (with `local_ids`), whose
    gradient the sparse optimizer reads and scatters back into `weights`. Without such an optimizer
    the table simply stays as it is.
    """

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.zeros(num_embeddings, dim))  # original init: zeros
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]  # [B, ndim]
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_(True)
            self.local_weights, self.local_ids = rows, ids
        return rows


class TRM(nn.Module):
    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        D, P = config.hidden_size, config.prefix_len
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = CastedEmbedding(config.vocab_size, D, init_std=1.0 / self.embed_scale)
        self.lm_head = CastedLinear(D, config.vocab_size)
        self.q_head = CastedLinear(D, 2, bias=True)  # [halt, continue] logits read at position 0
        with torch.no_grad():  # start confident that nothing is solved: sigmoid(-5) ~ 0.0067
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim) \
            if config.puzzle_emb_ndim > 0 else None
        self.pos_embed = CastedEmbedding(config.total_len, D, init_std=1.0 / self.embed_scale) \
            if config.pos_encodings == "learned" else None
        self.rope = RotaryEmbedding(config.head_dim, config.total_len, config.rope_theta) \
            if config.pos_encodings == "rope" and not config.mlp_t else None
        # NOTE: one 2-layer network serves both the z_L and the z_H update; there is no H network.
        self.layers = nn.ModuleList(
            Block(D, config.num_heads, config.expansion, P + config.seq_len, config.mlp_t, config.rms_norm_eps)
            for _ in range(config.L_layers)
        )
        # Fixed random starting states (not learned), broadcast to every position of a restarted row.
        self.register_buffer("H_init", trunc_normal_(torch.empty(D), std=1.0))
        self.register_buffer("L_init", trunc_normal_(torch.empty(D), std=1.0))

    # ---- bookkeeping -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.H_init.device

    @property
    def forward_dtype(self) -> torch.dtype:
        """bfloat16 on CUDA as the paper trains; elsewhere the weights' dtype (float32, or float64 in tests)."""
        return torch.bfloat16 if self.H_init.is_cuda else self.H_init.dtype

    def num_trainable_params(self) -> int:
        """Parameters seen by the dense optimizer: the paper's "7M" (excludes the puzzle table)."""
        return sum(p.numel() for p in self.parameters())

    def num_puzzle_table_params(self) -> int:
        return 0 if self.puzzle_emb is None else self.puzzle_emb.weights.numel()

    # ---- carry -------------------------------------------------------------------------------
    def empty_carry(self, batch_size: int) -> Carry:
        """A carry whose rows are all idle (they compute on padding until `reset_rows` fills them)."""
        cfg, dev = self.config, self.device
        z = torch.zeros(batch_size, cfg.total_len, cfg.hidden_size, dtype=self.forward_dtype, device=dev)
        return Carry(
            z_H=z, z_L=z.clone(), steps=torch.zeros(batch_size, dtype=torch.int32, device=dev),
            inputs=torch.zeros(batch_size, cfg.seq_len, dtype=torch.int32, device=dev),
            puzzle_ids=torch.zeros(batch_size, dtype=torch.int32, device=dev),
            input_embeddings=None if self.training else z.clone(),
        )

    def reset_rows(self, carry: Carry, rows: torch.Tensor, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> Carry:
        """Restart the rows where `rows` is True with new puzzles; the other rows are left as they are.

        Args:
            rows: bool [B]. inputs: int [B, seq_len] (only the selected rows are read).
            puzzle_ids: int [B] (only the selected rows are read).
        """
        B, L = carry.inputs.shape
        if inputs.shape != (B, L) or puzzle_ids.shape != (B,) or rows.shape != (B,):
            raise ValueError(f"reset_rows expects rows [{B}], inputs [{B}, {L}], puzzle_ids [{B}]; got "
                             f"{tuple(rows.shape)}, {tuple(inputs.shape)}, {tuple(puzzle_ids.shape)}")
        rows = rows.to(self.device, torch.bool)
        new_inputs = torch.where(rows[:, None], inputs.to(self.device, torch.int32), carry.inputs)
        new_ids = torch.where(rows, puzzle_ids.to(self.device, torch.int32), carry.puzzle_ids)
        m = rows[:, None, None]  # [B, 1, 1]
        dtype = carry.z_H.dtype
        cache = None
        if not self.training:  # inference reuses these; training recomputes them in step() with grad
            with torch.no_grad():
                x = self._input_embeddings(new_inputs, new_ids)
            old = carry.input_embeddings if carry.input_embeddings is not None else torch.zeros_like(x)
            cache = torch.where(m, x, old)
        return Carry(
            z_H=torch.where(m, self.H_init.to(dtype), carry.z_H),
            z_L=torch.where(m, self.L_init.to(dtype), carry.z_L),
            steps=torch.where(rows, 0, carry.steps),
            inputs=new_inputs, puzzle_ids=new_ids, input_embeddings=cache,
        )

    # ---- the network -------------------------------------------------------------------------
    def _input_embeddings(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> torch.Tensor:
        cfg, dtype = self.config, self.forward_dtype
        x = self.embed_tokens(inputs, dtype)  # [B, L, D]
        if self.puzzle_emb is not None:
            # The puzzle vector, zero-padded to fill the prefix: position 0 carries it, the other
            # prefix positions are zero inputs that act as scratch registers.
            pz = self.puzzle_emb(puzzle_ids).to(dtype)  # [B, ndim]
            pad = cfg.prefix_len * cfg.hidden_size - pz.shape[-1]
            pz = torch.nn.functional.pad(pz, (0, pad)).view(-1, cfg.prefix_len, cfg.hidden_size)
            x = torch.cat((pz, x), dim=-2)  # [B, P+L, D]
        elif cfg.prefix_len:
            x = torch.nn.functional.pad(x, (0, 0, cfg.prefix_len, 0))
        if self.pos_embed is not None:
            x = 0.707106781 * (x + self.pos_embed.weight.to(dtype))
        return self.embed_scale * x

    def _net(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, self.rope)
        return h

    def step(self, carry: Carry) -> tuple[Carry, StepOutput]:
        """One supervision step for every row: T deep-recursion passes, the last one with gradient."""
        cfg = self.config
        # Training recomputes x so the gradient reaches the (moving) embeddings; inference reuses reset's.
        x = carry.input_embeddings
        if self.training or x is None:
            x = self._input_embeddings(carry.inputs, carry.puzzle_ids)
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():  # T-1 passes without gradient
            for _ in range(cfg.H_cycles - 1):
                for _ in range(cfg.L_cycles):
                    z_L = self._net(z_L, z_H + x)  # latent update sees the input: z <- f(x, y, z)
                z_H = self._net(z_H, z_L)  # answer update does not: y <- f(y, z)
        for _ in range(cfg.L_cycles):  # the last pass, with full gradient through n+1 net applications
            z_L = self._net(z_L, z_H + x)
        z_H = self._net(z_H, z_L)

        logits = self.lm_head(z_H[:, cfg.prefix_len:])  # [B, L, V]
        q = self.q_head(z_H[:, 0]).float()  # [B, 2], position 0 = the puzzle-embedding slot
        new_carry = replace(carry, z_H=z_H.detach(), z_L=z_L.detach(), steps=carry.steps + 1)
        return new_carry, StepOutput(logits=logits, q_halt_logits=q[:, 0], q_continue_logits=q[:, 1])
