"""TRMConfig: every field of the original TRM config that changes the computation, plus task metadata.

The config travels inside every checkpoint as JSON (see checkpoint.py), so a weights file is
self-describing. Field names follow the original implementation (`hidden_size`, `H_cycles`, ...)
so that a user reading the paper's code recognises them. Training-only knobs (learning rates,
halting exploration) live in `training/`, not here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

PosEncoding = Literal["rope", "learned", "none"]
_POS_ENCODINGS = ("rope", "learned", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class TRMConfig:
    # network (one 2-layer block stack, shared by the z_L and z_H updates)
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    L_layers: int = 2
    # recursion: T = H_cycles deep-recursion passes of n = L_cycles latent updates + 1 answer update
    H_cycles: int = 3
    L_cycles: int = 6
    halt_max_steps: int = 16  # N_sup: supervision (ACT) steps at most
    # data shape
    seq_len: int = 81
    vocab_size: int = 11
    # puzzle embedding: a per-puzzle vector placed in the first `prefix_len` positions
    puzzle_emb_ndim: int = 512
    puzzle_emb_len: int = 16  # 0 = ceil(puzzle_emb_ndim / hidden_size), as the original
    num_puzzle_identifiers: int = 1
    pos_encodings: PosEncoding = "rope"
    mlp_t: bool = False  # token-mixing MLP instead of attention (the Sudoku MLP-t variant)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # task metadata (does not change the computation; tells codecs and the service what fits)
    task: str = ""
    grid_height: int = 0
    grid_width: int = 0

    def __post_init__(self) -> None:
        positive = ("hidden_size", "num_heads", "L_layers", "H_cycles", "L_cycles", "halt_max_steps",
                    "seq_len", "vocab_size", "num_puzzle_identifiers")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TRMConfig.{name}={value!r} must be a positive integer")
        for name in ("puzzle_emb_ndim", "puzzle_emb_len", "grid_height", "grid_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TRMConfig.{name}={value!r} must be a non-negative integer")
        if self.expansion <= 0:
            raise ValueError(f"TRMConfig.expansion={self.expansion!r} must be > 0")
        if self.pos_encodings not in _POS_ENCODINGS:
            raise ValueError(f"TRMConfig.pos_encodings={self.pos_encodings!r}; use one of {_POS_ENCODINGS}")
        if not self.mlp_t and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                f"use a multiple of {self.num_heads}"
            )
        if self.pos_encodings == "rope" and not self.mlp_t and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"RoPE needs an even head dim; hidden_size/num_heads={self.head_dim}")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim={self.puzzle_emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len} "
                f"positions of hidden_size={self.hidden_size}; raise puzzle_emb_len or set it to 0 (auto)"
            )
        if self.grid_height * self.grid_width > self.seq_len:
            raise ValueError(f"grid {self.grid_height}x{self.grid_width} does not fit in seq_len={self.seq_len}")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def prefix_len(self) -> int:
        """Positions in front of the tokens that hold the puzzle embedding (the rest of them are zero)."""
        if self.puzzle_emb_len:
            return self.puzzle_emb_len
        return math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def total_len(self) -> int:
        """Length of the sequence the network sees: prefix + tokens."""
        return self.prefix_len + self.seq_len

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TRMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TRMConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TRMConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TRMConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TRMConfig:
        """The paper's configurations (docs/MODEL_SPEC.md, "configuration"), optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


_PAPER = dict(hidden_size=512, num_heads=8, expansion=4.0, L_layers=2, H_cycles=3, halt_max_steps=16,
              puzzle_emb_ndim=512, puzzle_emb_len=16, num_puzzle_identifiers=1)
_SUDOKU = dict(_PAPER, L_cycles=6, seq_len=81, vocab_size=11, task="sudoku", grid_height=9, grid_width=9)
_GRID30 = dict(_PAPER, L_cycles=4, seq_len=900, pos_encodings="rope", grid_height=30, grid_width=30)

PRESETS: dict[str, dict[str, Any]] = {
    "sudoku-mlp": dict(_SUDOKU, mlp_t=True, pos_encodings="none"),
    "sudoku-att": dict(_SUDOKU, mlp_t=False, pos_encodings="rope"),
    "maze-att": dict(_GRID30, vocab_size=6, task="maze"),
    # ARC's puzzle table has one row per augmented task version (~1e6 for ARC-1); the data builder
    # sets num_puzzle_identifiers, it is not part of the trainable parameter count.
    "arc-att": dict(_GRID30, vocab_size=12, task="arc"),
}
