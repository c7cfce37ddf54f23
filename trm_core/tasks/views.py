"""Views: symmetric versions of a puzzle with exact inverses, for verified test-time augmentation.

A view of a grid task is a permutation of the cells plus a relabelling of the tokens:
`view[i] = tok[x[pos[i]]]`. Sudoku's symmetries (the original builder's: digit relabelling,
transposition, band/stack and row/column-within shuffles) and Maze's 8 dihedral maps (start and
goal move with the grid) are all of that form, so one `ViewSet` holds K views as two index tensors
and applies or inverts all of them with one gather, for a whole batch.

Why: the same weights solve some symmetric versions of a hard puzzle and not others, and for Sudoku
and Maze the rule check tells which answer is right. The service runs a request's views as a group
of rows and stops at the first one whose answer, mapped back, passes the check (docs/ARCHITECTURE.md,
"groups of views").

View 0 is always the identity; views 1.. are drawn from a seeded generator, so a request's views are
reproducible. ARC's versions (colour permutations and the dihedral group) live in `augment.ArcAug`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from . import maze, sudoku
from .augment import SudokuAug, dihedral

__all__ = ["ViewSet", "sudoku_views", "maze_views", "views_for", "max_views"]

MAZE_DIHEDRAL_ORDER = (0, 6, 2, 4, 5, 1, 3, 7)  # identity first; shape-preserving maps first for non-square grids


@dataclass(frozen=True)
class ViewSet:
    """K views of sequences of length L over a vocabulary of V tokens."""

    pos: torch.Tensor  # int64 [K, L]: view position i reads original position pos[k, i]
    tok: torch.Tensor  # int64 [K, V]: token t becomes tok[k, t]
    inv_pos: torch.Tensor  # int64 [K, L]
    inv_tok: torch.Tensor  # int64 [K, V]

    @classmethod
    def from_maps(cls, pos: torch.Tensor, tok: torch.Tensor) -> ViewSet:
        pos, tok = pos.long(), tok.long()
        return cls(pos=pos, tok=tok, inv_pos=torch.argsort(pos, dim=1), inv_tok=torch.argsort(tok, dim=1))

    @property
    def num_views(self) -> int:
        return self.pos.shape[0]

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens int [L] or [B, L] -> every view: [K, L] or [B, K, L] (same dtype)."""
        return _gather(tokens, self.pos, self.tok)

    def invert(self, tokens: torch.Tensor) -> torch.Tensor:
        """Answers in the views' frames, int [K, L] (view k in row k) or [B, K, L] -> the original frame."""
        return _gather(tokens, self.inv_pos, self.inv_tok, per_view=True)

    def invert_one(self, k: int, tokens: list[int]) -> list[int]:
        """One answer of view k (host list) mapped back to the puzzle as posted."""
        if k == 0 and self.is_identity(0):
            return list(tokens)
        inv_pos, inv_tok = self.inv_pos[k].tolist(), self.inv_tok[k].tolist()
        return [inv_tok[tokens[p]] for p in inv_pos]

    def is_identity(self, k: int) -> bool:
        return bool(torch.equal(self.pos[k], torch.arange(self.pos.shape[1]))
                    and torch.equal(self.tok[k], torch.arange(self.tok.shape[1])))


def _gather(tokens: torch.Tensor, pos: torch.Tensor, tok: torch.Tensor, *, per_view: bool = False) -> torch.Tensor:
    dtype = tokens.dtype
    x = tokens.long()
    single = x.dim() == (2 if per_view else 1)
    if single:
        x = x[None]
    if not per_view:  # the same input under every view: [B, L] -> [B, K, L]
        x = x[:, None, :].expand(-1, pos.shape[0], -1)
    moved = torch.gather(x, 2, pos[None].expand(x.shape[0], -1, -1))  # [B, K, L]
    out = torch.gather(tok[None].expand(x.shape[0], -1, -1), 2, moved)
    return (out[0] if single else out).to(dtype)


def max_views(task: str, grid_shape: tuple[int, int] = (9, 9)) -> int:
    """How many distinct views the family has (Sudoku: more than any request asks for)."""
    if task == "sudoku":
        return 2 * 6 ** 8 * 362880  # transpose x band/row/stack/column orders x digit relabellings
    if task == "maze":
        return 8 if grid_shape[0] == grid_shape[1] else 4
    raise ValueError(f"task {task!r} has no views; views exist for sudoku and maze")


def sudoku_views(num_views: int, seed: int = 0) -> ViewSet:
    """View 0 = identity, then `num_views - 1` random Sudoku symmetries drawn as the original builder
    draws them (`SudokuAug.random`), from `random.Random(seed)`."""
    rng = random.Random(seed)
    augs = [SudokuAug(tuple(range(10)), False, tuple(range(9)), tuple(range(9)))]
    augs += [SudokuAug.random(rng) for _ in range(num_views - 1)]
    pos, tok = [], []
    for a in augs:
        # new cell (i, j) takes old cell (row_perm[i], col_perm[j]) of the (optionally transposed) grid
        pos.append([(a.col_perm[j] * 9 + a.row_perm[i]) if a.transpose else (a.row_perm[i] * 9 + a.col_perm[j])
                    for i in range(9) for j in range(9)])
        # tokens: PAD 0 and blank 1 stay, digit d (token d + 1) becomes digit_map[d]
        tok.append([sudoku.PAD, sudoku.BLANK] + [a.digit_map[d] + 1 for d in range(1, 10)])
    return ViewSet.from_maps(torch.tensor(pos), torch.tensor(tok))


def maze_views(num_views: int, height: int, width: int) -> ViewSet:
    """The first `num_views` dihedral maps (identity first); non-square grids keep only the 4 that
    preserve the shape. Tokens are unchanged: walls, start and goal move with their cells."""
    ks = [k for k in MAZE_DIHEDRAL_ORDER if height == width or k in (0, 2, 4, 5)][:num_views]
    index = [[r * width + c for c in range(width)] for r in range(height)]
    pos = [[p for row in dihedral(index, k) for p in row] for k in ks]
    tok = [list(range(maze.VOCAB_SIZE))] * len(ks)
    return ViewSet.from_maps(torch.tensor(pos), torch.tensor(tok))


def views_for(task: str, num_views: int, *, grid_shape: tuple[int, int] = (9, 9), seed: int = 0) -> ViewSet:
    """The view family of `task` with min(num_views, max_views(task)) views."""
    if num_views < 1:
        raise ValueError(f"num_views={num_views}; at least 1 (the identity)")
    n = min(num_views, max_views(task, grid_shape))
    if task == "sudoku":
        return sudoku_views(n, seed)
    return maze_views(n, *grid_shape)
