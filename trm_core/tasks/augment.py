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
Not here: choosing how many augmentations to make (the builders' job).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DIHEDRAL_INVERSE", "dihedral", "inverse_dihedral", "dihedral_rows",
    "SudokuAug", "ArcAug", "version_name", "parse_version_name", "random_offset",
]

T = TypeVar("T")
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
VERSION_SEPARATOR = "|||"


def dihedral(grid: Sequence[Sequence[T]], k: int) -> list[list[T]]:
    """The original's `dihedral_transform(grid, k)` on a list of rows (see the module docstring)."""
    h, w = len(grid), len(grid[0])
    if k == 0:
        return [list(row) for row in grid]
    if k == 1:  # np.rot90(k=1), counter-clockwise: out[i][j] = a[j][w-1-i]
        return [[grid[j][w - 1 - i] for j in range(h)] for i in range(w)]
    if k == 2:
        return [list(reversed(row)) for row in reversed(grid)]
    if k == 3:  # out[i][j] = a[h-1-j][i]
        return [[grid[h - 1 - j][i] for j in range(h)] for i in range(w)]
    if k == 4:  # fliplr
        return [list(reversed(row)) for row in grid]
    if k == 5:  # flipud
        return [list(row) for row in reversed(grid)]
    if k == 6:  # transpose
        return [[grid[j][i] for j in range(h)] for i in range(w)]
    if k == 7:  # fliplr(rot90): out[i][j] = a[h-1-j][w-1-i]
        return [[grid[h - 1 - j][w - 1 - i] for j in range(h)] for i in range(w)]
    raise ValueError(f"dihedral transform id {k} is out of range 0-7")


def inverse_dihedral(grid: Sequence[Sequence[T]], k: int) -> list[list[T]]:
    """Undo `dihedral(grid, k)`."""
    if not 0 <= k <= 7:
        raise ValueError(f"dihedral transform id {k} is out of range 0-7")
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
        src = dihedral(grid, 6) if self.transpose else grid
        return [[self.digit_map[src[r][c]] for c in self.col_perm] for r in self.row_perm]

    def invert(self, grid: Sequence[Sequence[int]]) -> list[list[int]]:
        inv_digit = [0] * 10
        for d, m in enumerate(self.digit_map):
            inv_digit[m] = d
        out = [[0] * 9 for _ in range(9)]
        for i, r in enumerate(self.row_perm):
            for j, c in enumerate(self.col_perm):
                out[r][c] = inv_digit[grid[i][j]]
        return dihedral(out, 6) if self.transpose else out


@dataclass(frozen=True)
class ArcAug:
    """One ARC version: colour map `perm` (perm[c] is the new colour of c, perm[0] == 0), then dihedral `k`."""

    k: int = 0
    perm: tuple[int, ...] = tuple(range(10))

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 7:
            raise ValueError(f"dihedral transform id {self.k} is out of range 0-7")
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
