"""Sudoku codec: parse a user grid, encode it as the original builder's tokens, decode, rule check.

Token layout is exactly the original `dataset/build_sudoku_dataset.py`: 81 cells row-major,
PAD 0 (never used inside a puzzle), blank 1, digit d -> d + 1; vocab 11. Labels are the full
solution (givens included), as in the original.

Grid form used everywhere in trm-serve: a 9x9 list of lists of ints, 0 = blank. Rows and
columns are counted from 0 in messages and error locations (see `errors.py`).
Not here: solving. The model solves; `verify` only checks an answer against the rules.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import torch

from .errors import ErrorList, Loc, TaskInputError, row_problem

__all__ = [
    "SIZE", "SEQ_LEN", "VOCAB_SIZE", "PAD", "BLANK", "Grid",
    "parse", "encode", "encode_batch", "decode", "verify", "is_solution_batch", "find_conflicts", "to_string",
]

SIZE = 9
SEQ_LEN = SIZE * SIZE
VOCAB_SIZE = 11  # PAD + blank + digits 1..9
PAD = 0
BLANK = 1

Grid = list[list[int]]

# The 27 units (rows, columns, boxes) as flat cell indices, computed once: `verify` runs on
# every served answer and over ~100k rows in the data tests, so it must be a few set ops.
_ROWS = [[r * SIZE + c for c in range(SIZE)] for r in range(SIZE)]
_COLS = [[r * SIZE + c for r in range(SIZE)] for c in range(SIZE)]
_BOXES = [
    [(br + dr) * SIZE + bc + dc for dr in range(3) for dc in range(3)]
    for br in range(0, SIZE, 3) for bc in range(0, SIZE, 3)
]
_FULL = frozenset(range(1, 10))
_UNIT_GETTERS = [itemgetter(*unit) for units in (_ROWS, _COLS, _BOXES) for unit in units]
_UNITS = torch.tensor(_ROWS + _COLS + _BOXES)  # [27, 9] flat cell indices, for the batch check
# Violation lists are capped so an empty answer does not produce 81 lines.
MAX_VIOLATIONS = 30


def parse(obj: Any, *, loc: Loc = ("puzzle",)) -> Grid:
    """Validate a user Sudoku and return it as a 9x9 list of ints (0 = blank).

    Accepts an 81-character string (row-major; '1'-'9' givens, '.' or '0' blank) or a 9x9
    list of lists of ints 0-9 (0 or None = blank). Raises `TaskInputError` naming every bad
    cell (row, column, value); `loc` is the JSON path of `obj` in the request.
    """
    if isinstance(obj, str):
        return _parse_string(obj, loc)
    if not isinstance(obj, (list, tuple)):
        raise TaskInputError.single(
            loc, f"puzzle must be an 81-character string or a 9x9 list of lists; got {type(obj).__name__}")
    if len(obj) != SIZE:
        raise TaskInputError.single(loc, f"puzzle has {len(obj)} rows; expected 9")
    errors = ErrorList()
    grid: Grid = []
    for r, row in enumerate(obj):
        problem = row_problem(row, r, SIZE, (list, tuple), "a list of 9 cells")
        if problem:
            errors.add((*loc, r), problem)
            continue
        out_row = []
        for c, v in enumerate(row):
            if v is None:
                v = 0
            if isinstance(v, bool) or not isinstance(v, int):
                errors.add((*loc, r, c), f"row {r}, column {c}: {v!r} is not an integer "
                                         "(use 1-9 for a digit, 0 or null for a blank)")
                continue
            if not 0 <= v <= 9:
                errors.add((*loc, r, c), f"row {r}, column {c}: value {v} is out of range 0-9")
                continue
            out_row.append(v)
        grid.append(out_row)
    errors.raise_if_any()
    return grid


def _parse_string(s: str, loc: Loc) -> Grid:
    if len(s) != SEQ_LEN:
        raise TaskInputError.single(loc, f"puzzle string has {len(s)} characters; expected 81 "
                                         "(row-major, '1'-'9' givens, '.' or '0' blank)")
    errors = ErrorList()
    flat = []
    for i, ch in enumerate(s):
        if ch == ".":
            flat.append(0)
        elif "0" <= ch <= "9":
            flat.append(ord(ch) - 48)
        else:
            errors.add((*loc, i), f"character {i} (row {i // SIZE}, column {i % SIZE}): {ch!r} is not "
                                  "a digit 1-9 or a blank '.'/'0'")
    errors.raise_if_any()
    return [flat[r * SIZE:(r + 1) * SIZE] for r in range(SIZE)]


def encode(grid: Grid) -> list[int]:
    """Grid -> 81 token ids (blank 1, digit d -> d + 1), the original builder's encoding."""
    return [v + 1 for row in grid for v in row]


def encode_batch(grids: torch.Tensor) -> torch.Tensor:
    """Digit grids [..., 9, 9] (0 = blank) -> token ids [..., 81] (same dtype): `encode` for tensors."""
    return grids.reshape(*grids.shape[:-2], SEQ_LEN) + 1


@functools.lru_cache(maxsize=8)
def _units_on(device: torch.device) -> torch.Tensor:
    """`_UNITS` on `device`, copied once: a copy from pageable host memory would wait for the device
    at every call (the service checks rows after every step)."""
    return _UNITS.to(device)


def is_solution_batch(puzzles: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """bool [N]: answer i is a complete, valid solution of puzzle i (digits [N, 81], 0 = blank).

    The vectorised form of `verify(...) == []` for data files and for the service's verified
    halting: givens kept, every row, column and box holds 1-9 once. Runs on the tensors' device.
    """
    a = answers.long()
    digits = torch.arange(1, SIZE + 1, device=a.device)
    units_ok = (a[:, _units_on(a.device)].sort(-1).values == digits).all(-1).all(-1)
    givens_kept = ((puzzles == 0) | (puzzles == answers)).all(-1)
    return units_ok & givens_kept


def decode(tokens: Sequence[int] | Any) -> Grid:
    """81 token ids -> grid. PAD (0) and blank (1) both decode to 0 (blank), so a model that
    predicts PAD somewhere yields a blank cell that `verify` reports, rather than a crash."""
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    tokens = list(tokens)
    if len(tokens) != SEQ_LEN:
        raise ValueError(f"sudoku.decode got {len(tokens)} tokens; expected 81")
    bad = [t for t in tokens if not 0 <= t < VOCAB_SIZE]
    if bad:
        raise ValueError(f"sudoku.decode got token {bad[0]} outside the vocabulary 0-{VOCAB_SIZE - 1}")
    flat = [t - 1 if t >= 2 else 0 for t in tokens]
    return [flat[r * SIZE:(r + 1) * SIZE] for r in range(SIZE)]


def to_string(grid: Grid) -> str:
    """Grid -> the 81-character form used by the CSV files ('.' blank)."""
    return "".join(str(v) if v else "." for row in grid for v in row)


def find_conflicts(grid: Grid) -> list[str]:
    """Digits repeated within a row, column or box (blanks ignored). [] when none.

    Used by `verify` on answers and usable on puzzles: a puzzle whose givens conflict has no
    solution, so the service can refuse it before spending model steps.
    """
    flat = [v for row in grid for v in row]
    if all(set(get(flat)) == _FULL for get in _UNIT_GETTERS):  # fast path: a complete, valid grid
        return []
    found: list[str] = []
    for kind, units in (("row", _ROWS), ("column", _COLS), ("box", _BOXES)):
        for u, unit in enumerate(units):
            seen: dict[int, list[int]] = {}
            for i in unit:
                if flat[i]:
                    seen.setdefault(flat[i], []).append(i)
            for digit, cells in seen.items():
                if len(cells) > 1:
                    where = ", ".join(f"(row {i // SIZE}, column {i % SIZE})" for i in cells)
                    found.append(f"{kind} {u}: digit {digit} appears {len(cells)} times, at {where}")
    return found


def verify(puzzle: Grid, answer: Grid) -> list[str]:
    """Rule violations of `answer` as a solution of `puzzle`; [] means a valid solution.

    Reports: the answer is not a 9x9 grid of 0-9; a given changed; a digit repeated in a row,
    column or box; cells left blank. Each message names the row, column and value.
    """
    try:
        answer = parse(answer, loc=("answer",))
    except TaskInputError as e:
        return [msg for _, msg in e.errors]
    flat_puzzle = [v for row in puzzle for v in row]
    flat_answer = [v for row in answer for v in row]
    violations = [f"row {i // SIZE}, column {i % SIZE}: given {given} was changed to {got or 'blank'}"
                  for i, (given, got) in enumerate(zip(flat_puzzle, flat_answer, strict=True))
                  if given and got != given]
    violations += find_conflicts(answer)
    if 0 in flat_answer:
        violations += [f"row {i // SIZE}, column {i % SIZE}: cell left blank"
                       for i, v in enumerate(flat_answer) if v == 0]
    if len(violations) > MAX_VIOLATIONS:
        extra = len(violations) - MAX_VIOLATIONS
        violations = violations[:MAX_VIOLATIONS] + [f"and {extra} more violations"]
    return violations
