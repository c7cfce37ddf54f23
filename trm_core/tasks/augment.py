"""Augmentations with exact inverses, on plain-list grids (stdlib only).

The builders augment training data with these transforms, and the service inverts them when it
votes over an ARC task's versions, so both sides must agree bit for bit with the original
implementation (`dataset/common.py`, `build_sudoku_dataset.py`, `build_arc_dataset.py`):

- Dihedral ids as the original's `dihedral_transform`: 0 identity, 1/2/3 rotate 90/180/270
  degrees counter-clockwise (`np.rot90(k)`), 4 flip left-right, 5 flip up-down, 6 transpose,
  7 anti-transpose (`fliplr(rot90)`); inverses (0, 3, 2, 1, 4, 5, 6, 7).
- Sudoku: transpose (optional), then rows from `row_perm` / columns from `col_perm` (bands and
  rows within bands, stacks and columns within stacks), then a permutation of digits 1-9.
- ARC: a permutation of colours 1-9 (0, black, fixed) and a dihedral transform; a version is
  named `task|||t{k}|||{perm}` with perm the 10 mapped colours, e.g. `007bbfc7|||t3|||0531246789`.
  Translation lives in the encoding (`arc.encode(offset=...)`, inverted by `arc.decode(offset=...)`).
- Maze: the 8 dihedral transforms (`dihedral_rows` for the list-of-strings form).
Batches: each transform has one definition, on torch tensors, and the list forms above are
that definition applied to one grid. `dihedral_tensor` (one k for a whole batch), `dihedral_batch`
(a k per row, e.g. the 8 views of a maze), `SudokuAugBatch.apply` / `.apply_tokens` (a Sudoku
symmetry per row) are what the builders, the trainer and the service's views run.
Not here: choosing how many augmentations to make (the builders' job).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import torch

__all__ = [
    "DIHEDRAL_INVERSE", "dihedral", "inverse_dihedral", "dihedral_rows",
    "dihedral_tensor", "dihedral_batch", "inverse_dihedral_batch",
    "SudokuAug", "SudokuAugBatch", "ArcAug", "version_name", "parse_version_name", "random_offset",
]

T = TypeVar("T")
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
VERSION_SEPARATOR = "|||"


def _check_k(k: int) -> None:
    if not 0 <= k <= 7:
        raise ValueError(f"dihedral transform id {k} is out of range 0-7")


def dihedral_tensor(x: torch.Tensor, k: int) -> torch.Tensor:
    """The original's `dihedral_transform` on the last two dims of `x` (rows, columns), one `k` for all.

    `torch.rot90` turns from the first towards the second axis, as `np.rot90` does, so ids match.
    """
    _check_k(k)
    if k == 0:
        return x
    if k <= 3:
        return torch.rot90(x, k, dims=(-2, -1))
    if k == 4:
        return x.flip(-1)  # fliplr
    if k == 5:
        return x.flip(-2)  # flipud
    if k == 6:
        return x.transpose(-2, -1)
    return torch.rot90(x, 1, dims=(-2, -1)).flip(-1)  # fliplr(rot90)


@lru_cache(maxsize=256)
def _dihedral_index(h: int, w: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Output cell (i, j) of transform `k` on an h x w grid takes flat input cell index[i][j]."""
    idx = dihedral_tensor(torch.arange(h * w).view(h, w), k)
    return tuple(tuple(row) for row in idx.tolist())


def dihedral(grid: Sequence[Sequence[T]], k: int) -> list[list[T]]:
    """`dihedral_tensor` on a list of rows of anything (ints, characters); see the module docstring."""
    _check_k(k)
    h, w = len(grid), len(grid[0])
    flat = [v for row in grid for v in row]
    return [[flat[i] for i in row] for row in _dihedral_index(h, w, k)]


def _check_ks(ks: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    ks = torch.as_tensor(ks, dtype=torch.long).cpu()
    if ks.shape != (n,):
        raise ValueError(f"need one dihedral transform id per row: {n} rows, ids of shape {tuple(ks.shape)}")
    if n and (int(ks.min()) < 0 or int(ks.max()) > 7):
        raise ValueError(f"dihedral transform ids must be in 0-7; got {ks.tolist()}")
    return ks


def dihedral_batch(x: torch.Tensor, ks: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """`dihedral_tensor` with its own id per row: x [n, H, W], ks [n] -> [n, H', W'], one gather.

    All ids must give the same output shape (any ids on square grids; on others 0, 2, 4, 5 keep
    it and 1, 3, 6, 7 swap it), e.g. the 8 views of a maze, or one view per request.
    """
    n, h, w = x.shape
    ks = _check_ks(ks, n)
    if n == 0:
        return x
    turned = (ks == 1) | (ks == 3) | (ks >= 6)
    if h != w and bool(turned.any()) and not bool(turned.all()):
        raise ValueError(f"transform ids {sorted(set(ks.tolist()))} give a {h}x{w} grid two shapes; "
                         "one batch needs one output shape")
    out_h, out_w = (w, h) if bool(turned[0]) else (h, w)
    uniq, which = ks.unique(return_inverse=True)
    table = torch.tensor([_dihedral_index(h, w, int(k)) for k in uniq], device=x.device).view(len(uniq), h * w)
    return x.reshape(n, h * w).gather(1, table[which.to(x.device)]).view(n, out_h, out_w)


def inverse_dihedral_batch(x: torch.Tensor, ks: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Undo `dihedral_batch(x, ks)` row by row."""
    ks = _check_ks(ks, x.shape[0])
    return dihedral_batch(x, torch.tensor(DIHEDRAL_INVERSE)[ks])


def inverse_dihedral(grid: Sequence[Sequence[T]], k: int) -> list[list[T]]:
    """Undo `dihedral(grid, k)`."""
    _check_k(k)
    return dihedral(grid, DIHEDRAL_INVERSE[k])


def dihedral_rows(rows: Sequence[str], k: int, *, inverse: bool = False) -> list[str]:
    """`dihedral` for a grid held as strings (the maze form)."""
    out = inverse_dihedral(rows, k) if inverse else dihedral(rows, k)
    return ["".join(row) for row in out]


def _check_perm(perm: Sequence[int], n: int, what: str) -> None:
    if sorted(perm) != list(range(n)):
        raise ValueError(f"{what} {list(perm)} is not a permutation of 0-{n - 1}")


@dataclass(frozen=True)
class SudokuAug:
    """One Sudoku symmetry: transpose?, row/column shuffles that keep bands and stacks, digit relabel.

    `digit_map[d]` is the new digit for d (digit_map[0] == 0 keeps blanks); new cell (i, j)
    takes old cell (row_perm[i], col_perm[j]) of the (optionally transposed) grid.
    """

    digit_map: tuple[int, ...]
    transpose: bool
    row_perm: tuple[int, ...]
    col_perm: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_perm(self.digit_map, 10, "digit_map")
        if self.digit_map[0] != 0:
            raise ValueError(f"digit_map must keep 0 (blank) fixed; got {self.digit_map[0]}")
        for name in ("row_perm", "col_perm"):
            perm = getattr(self, name)
            _check_perm(perm, 9, name)
            if any({p // 3 for p in perm[b * 3:b * 3 + 3]} != {perm[b * 3] // 3} for b in range(3)):
                raise ValueError(f"{name} {list(perm)} moves a row/column out of its band/stack")

    @classmethod
    def random(cls, rng: random.Random) -> SudokuAug:
        """Draw as the original `shuffle_sudoku`: digits, transpose with p=0.5, bands then rows."""
        digit_map = (0, *rng.sample(range(1, 10), 9))
        transpose = rng.random() < 0.5
        row_perm = tuple(b * 3 + r for b in rng.sample(range(3), 3) for r in rng.sample(range(3), 3))
        col_perm = tuple(s * 3 + c for s in rng.sample(range(3), 3) for c in rng.sample(range(3), 3))
        return cls(digit_map, transpose, row_perm, col_perm)

    def apply(self, grid: Sequence[Sequence[int]]) -> list[list[int]]:
        return SudokuAugBatch.stack([self]).apply(torch.tensor([grid]))[0].tolist()

    def invert(self, grid: Sequence[Sequence[int]]) -> list[list[int]]:
        return SudokuAugBatch.stack([self]).invert(torch.tensor([grid]))[0].tolist()


@dataclass(frozen=True)
class SudokuAugBatch:
    """n Sudoku symmetries as tensors (row i is one `SudokuAug`): the one implementation of the transform.

    Grids are digits [n, 9, 9] (0 = blank); tokens are the codec's ids [n, 81] (PAD 0, blank 1,
    digit d -> d + 1; PAD stays PAD). Row i of the output is `SudokuAug` i applied to row i.
    """

    digit_map: torch.Tensor  # int64 [n, 10], digit_map[:, 0] == 0
    transpose: torch.Tensor  # bool [n]
    row_perm: torch.Tensor  # int64 [n, 9]
    col_perm: torch.Tensor  # int64 [n, 9]

    @classmethod
    def stack(cls, augs: Sequence[SudokuAug]) -> SudokuAugBatch:
        return cls(torch.tensor([a.digit_map for a in augs], dtype=torch.long).view(-1, 10),
                   torch.tensor([a.transpose for a in augs], dtype=torch.bool),
                   torch.tensor([a.row_perm for a in augs], dtype=torch.long).view(-1, 9),
                   torch.tensor([a.col_perm for a in augs], dtype=torch.long).view(-1, 9))

    def __len__(self) -> int:
        return int(self.transpose.shape[0])

    def __getitem__(self, i: int) -> SudokuAug:
        return SudokuAug(tuple(self.digit_map[i].tolist()), bool(self.transpose[i]),
                         tuple(self.row_perm[i].tolist()), tuple(self.col_perm[i].tolist()))

    def _move(self, x: torch.Tensor) -> torch.Tensor:
        """Cells only: transpose?, then new (i, j) <- old (row_perm[i], col_perm[j]); x [n, 9, 9]."""
        n = x.shape[0]
        x = torch.where(self.transpose.to(x.device)[:, None, None], x.transpose(1, 2), x)
        x = x.gather(1, self.row_perm.to(x.device)[:, :, None].expand(n, 9, 9))
        return x.gather(2, self.col_perm.to(x.device)[:, None, :].expand(n, 9, 9))

    def _unmove(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.gather(2, self.col_perm.argsort(1).to(x.device)[:, None, :].expand(n, 9, 9))
        x = x.gather(1, self.row_perm.argsort(1).to(x.device)[:, :, None].expand(n, 9, 9))
        return torch.where(self.transpose.to(x.device)[:, None, None], x.transpose(1, 2), x)

    @staticmethod
    def _relabel(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = table.to(x.device).gather(1, x.reshape(n, -1).long())
        return out.view(x.shape).to(x.dtype)

    def apply(self, grids: torch.Tensor) -> torch.Tensor:
        """Digit grids [n, 9, 9] -> the augmented grids (same dtype)."""
        return self._relabel(self._move(grids), self.digit_map)

    def invert(self, grids: torch.Tensor) -> torch.Tensor:
        """Undo `apply`."""
        return self._relabel(self._unmove(grids), self.digit_map.argsort(1))

    def _token_map(self, digit_map: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(digit_map[:, :1]), digit_map + 1], dim=1)  # PAD 0 kept

    def apply_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codec tokens [n, 81] -> the augmented tokens (same dtype)."""
        n = tokens.shape[0]
        return self._relabel(self._move(tokens.view(n, 9, 9)), self._token_map(self.digit_map)).view(n, 81)

    def invert_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Undo `apply_tokens`."""
        n = tokens.shape[0]
        moved = self._unmove(tokens.view(n, 9, 9))
        return self._relabel(moved, self._token_map(self.digit_map.argsort(1))).view(n, 81)


@dataclass(frozen=True)
class ArcAug:
    """One ARC version: colour map `perm` (perm[c] is the new colour of c, perm[0] == 0), then dihedral `k`."""

    k: int = 0
    perm: tuple[int, ...] = tuple(range(10))

    def __post_init__(self) -> None:
        _check_k(self.k)
        _check_perm(self.perm, 10, "colour permutation")
        if self.perm[0] != 0:
            raise ValueError(f"colour permutation must keep 0 (black) fixed; got {self.perm[0]}")

    @classmethod
    def random(cls, rng: random.Random) -> ArcAug:
        """Draw as the original `aug`: a dihedral id 0-7 and a shuffle of colours 1-9."""
        return cls(rng.randrange(8), (0, *rng.sample(range(1, 10), 9)))

    @property
    def is_identity(self) -> bool:
        return self.k == 0 and self.perm == tuple(range(10))

    def apply(self, grid: Sequence[Sequence[int]]) -> list[list[int]]:
        return dihedral([[self.perm[v] for v in row] for row in grid], self.k)

    def invert(self, grid: Sequence[Sequence[int]]) -> list[list[int]]:
        inv = [0] * 10
        for c, m in enumerate(self.perm):
            inv[m] = c
        return [[inv[v] for v in row] for row in inverse_dihedral(grid, self.k)]

    def name(self, task: str) -> str:
        return version_name(task, self.k, self.perm)


def version_name(task: str, k: int, perm: Sequence[int]) -> str:
    """`task|||t{k}|||{perm}`, the original builder's name for an augmented version."""
    return f"{task}{VERSION_SEPARATOR}t{k}{VERSION_SEPARATOR}{''.join(str(p) for p in perm)}"


def parse_version_name(name: str) -> tuple[str, int, tuple[int, ...]]:
    """`task|||t{k}|||{perm}` -> (task, k, perm); a plain task name is its identity version."""
    if VERSION_SEPARATOR not in name:
        return name, 0, tuple(range(10))
    parts = name.split(VERSION_SEPARATOR)
    if len(parts) != 3 or not parts[1].startswith("t") or not parts[1][1:].isdigit() \
            or len(parts[2]) != 10 or not parts[2].isdigit():
        raise ValueError(f"{name!r} is not a version name of the form 'task|||t<k>|||<10 digits>'")
    aug = ArcAug(int(parts[1][1:]), tuple(int(ch) for ch in parts[2]))  # validates k and perm
    return parts[0], aug.k, aug.perm


def random_offset(rng: random.Random, shapes: Sequence[tuple[int, int]], canvas: int = 30) -> tuple[int, int]:
    """A translation that keeps every grid of `shapes` (height, width) on the canvas, as the original
    draws one offset per (input, output) pair."""
    max_h = max(h for h, _ in shapes)
    max_w = max(w for _, w in shapes)
    return rng.randint(0, canvas - max_h), rng.randint(0, canvas - max_w)
