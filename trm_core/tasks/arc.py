"""ARC codec: parse grids and tasks, the original 30x30 canvas encoding, decode by cropping.

Encoding is exactly the original `dataset/build_arc_dataset.py`: a grid is placed on a 30x30
canvas at offset (r, c) (0, 0 at inference), colour k -> token k + 2, EOS (1) fills the row
just below the grid (over its columns) and the column just right of it (over its rows) when
they fit, everything else is PAD (0); vocab 12, seq 900. Decoding crops the largest rectangle
from the offset that contains no PAD/EOS, as the original evaluator's `_crop` does.

A task is the standard ARC JSON: `{"train": [{"input": g, "output": g}, ...], "test":
[{"input": g}, ...]}` (test outputs optional; extra keys such as "name" are ignored).
`verify` can only check an answer's shape and colours: whether it is *right* is unknowable
without the solution. Rows and columns are counted from 0 (see `errors.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ErrorList, Loc, TaskInputError

__all__ = [
    "CANVAS", "SEQ_LEN", "VOCAB_SIZE", "PAD", "EOS", "Grid", "ArcTask",
    "parse", "parse_task", "encode", "encode_tensor", "decode", "verify", "task_fingerprint",
]

CANVAS = 30
SEQ_LEN = CANVAS * CANVAS
VOCAB_SIZE = 12  # PAD + EOS + colours 0..9
PAD = 0
EOS = 1
_OFFSET = 2  # colour c -> token c + 2
MAX_VIOLATIONS = 30

Grid = list[list[int]]


@dataclass(frozen=True)
class ArcTask:
    """A validated ARC task. `test_outputs` is None when the JSON carried no test outputs."""

    train: list[tuple[Grid, Grid]]
    test_inputs: list[Grid]
    test_outputs: list[Grid] | None = None

    def to_json(self, *, with_test_outputs: bool = False) -> dict[str, Any]:
        """The standard ARC JSON form (test outputs only when asked for and known)."""
        test: list[dict[str, Grid]] = [{"input": g} for g in self.test_inputs]
        if with_test_outputs and self.test_outputs is not None:
            test = [{"input": i, "output": o} for i, o in zip(self.test_inputs, self.test_outputs, strict=True)]
        return {"train": [{"input": i, "output": o} for i, o in self.train], "test": test}


def _parse_grid(obj: Any, loc: Loc, errors: ErrorList, max_size: int) -> Grid | None:
    """Validate one grid into `errors`; returns the grid (as plain lists) or None if bad."""
    if not isinstance(obj, (list, tuple)):
        errors.add(loc, f"grid must be a list of rows of colours 0-9; got {type(obj).__name__}")
        return None
    if len(obj) == 0:
        errors.add(loc, f"grid is empty; ARC grids have 1-{max_size} rows")
        return None
    if len(obj) > max_size:
        errors.add(loc, f"grid has {len(obj)} rows; ARC grids have at most {max_size}")
        return None
    num_errors = len(errors.errors) + errors.num_more
    width = None
    grid: Grid = []
    for r, row in enumerate(obj):
        if not isinstance(row, (list, tuple)):
            errors.add((*loc, r), f"row {r} must be a list of colours 0-9; got {type(row).__name__}")
            continue
        if len(row) == 0:
            errors.add((*loc, r), f"row {r} is empty; ARC grids have 1-{max_size} columns")
            continue
        if len(row) > max_size:
            errors.add((*loc, r), f"row {r} has {len(row)} cells; ARC grids have at most {max_size} columns")
            continue
        if width is None:
            width = len(row)
        elif len(row) != width:
            errors.add((*loc, r), f"row {r} has {len(row)} cells but row 0 has {width}; "
                                  "grids must be rectangular")
            continue
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int):
                errors.add((*loc, r, c), f"row {r}, column {c}: {v!r} is not an integer colour 0-9")
            elif not 0 <= v <= 9:
                errors.add((*loc, r, c), f"row {r}, column {c}: value {v} is out of range 0-9")
        grid.append(list(row))
    if len(errors.errors) + errors.num_more > num_errors:
        return None
    return grid


def parse(obj: Any, *, loc: Loc = ("grid",), max_size: int = CANVAS) -> Grid:
    """Validate one ARC grid: rectangular, 1..30 rows and columns, ints 0-9."""
    errors = ErrorList()
    grid = _parse_grid(obj, loc, errors, max_size)
    errors.raise_if_any()
    assert grid is not None  # no errors means a grid was built
    return grid


def parse_task(obj: Any, *, loc: Loc = ("task",), max_size: int = CANVAS) -> ArcTask:
    """Validate a task in the standard ARC JSON form; reports every bad grid cell it finds."""
    if not isinstance(obj, dict):
        raise TaskInputError.single(loc, f"task must be an object with 'train' and 'test' lists; "
                                         f"got {type(obj).__name__}")
    errors = ErrorList()
    sections: dict[str, list[dict[str, Grid | None]]] = {}
    for key, need_output in (("train", True), ("test", False)):
        pairs = obj.get(key)
        if not isinstance(pairs, (list, tuple)) or len(pairs) == 0:
            got = ("missing" if pairs is None
                   else "an empty list" if isinstance(pairs, (list, tuple)) else type(pairs).__name__)
            errors.add((*loc, key), f"task needs a non-empty list '{key}' of pairs; got {got}")
            continue
        parsed = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                fields = "'input' and 'output'" if need_output else "'input'"
                errors.add((*loc, key, i), f"{key}[{i}] must be an object with {fields}; "
                                           f"got {type(pair).__name__}")
                continue
            out: dict[str, Grid | None] = {}
            for field in ("input", "output"):
                if field in pair:
                    out[field] = _parse_grid(pair[field], (*loc, key, i, field), errors, max_size)
                elif field == "input" or need_output:
                    errors.add((*loc, key, i), f"{key}[{i}] has no '{field}' grid")
            parsed.append(out)
        sections[key] = parsed
    errors.raise_if_any()
    test = sections["test"]
    has_outputs = all("output" in p for p in test)
    return ArcTask(
        train=[(p["input"], p["output"]) for p in sections["train"]],  # type: ignore[misc]
        test_inputs=[p["input"] for p in test],  # type: ignore[misc]
        test_outputs=[p["output"] for p in test] if has_outputs else None,  # type: ignore[misc]
    )


def encode_tensor(grid: torch.Tensor, *, offset: tuple[int, int] = (0, 0), canvas: int = CANVAS) -> torch.Tensor:
    """Colour grid [h, w] -> uint8 tokens [canvas*canvas]: colours at `offset`, EOS row below and
    column right (over the grid's extent, where they fit), PAD elsewhere. The one ARC encoder."""
    pad_r, pad_c = offset
    nrow, ncol = grid.shape
    if pad_r < 0 or pad_c < 0 or pad_r + nrow > canvas or pad_c + ncol > canvas:
        raise ValueError(f"a {nrow}x{ncol} grid at offset {offset} does not fit the {canvas}x{canvas} canvas")
    out = torch.full((canvas, canvas), PAD, dtype=torch.uint8)
    out[pad_r:pad_r + nrow, pad_c:pad_c + ncol] = grid.to(torch.uint8) + _OFFSET
    eos_row, eos_col = pad_r + nrow, pad_c + ncol
    if eos_row < canvas:
        out[eos_row, pad_c:eos_col] = EOS
    if eos_col < canvas:
        out[pad_r:eos_row, eos_col] = EOS
    return out.view(-1)


def encode(grid: Grid, *, offset: tuple[int, int] = (0, 0), canvas: int = CANVAS) -> list[int]:
    """Grid -> canvas*canvas token ids (list), `encode_tensor` on a list grid."""
    return encode_tensor(torch.tensor(grid, dtype=torch.uint8), offset=offset, canvas=canvas).tolist()


def decode(tokens: Sequence[int] | Any, *, offset: tuple[int, int] = (0, 0), canvas: int = CANVAS) -> Grid:
    """Tokens -> grid: the largest rectangle from `offset` without PAD/EOS (the original `_crop`).

    Scans rows downward, shrinking the usable width at the first non-colour token of each row,
    and keeps the (rows, width) of largest area (first one on ties). Returns [] when the cell
    at `offset` is not a colour; `verify` reports that as an empty grid.
    """
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    tokens = list(tokens)
    if len(tokens) != canvas * canvas:
        raise ValueError(f"arc.decode got {len(tokens)} tokens; expected {canvas}x{canvas} = {canvas * canvas}")
    r0, c0 = offset
    best_area, best_r, best_c = 0, 0, 0
    num_c = canvas - c0
    for num_r in range(1, canvas - r0 + 1):
        base = (r0 + num_r - 1) * canvas + c0
        for c in range(num_c):
            if not _OFFSET <= tokens[base + c] < VOCAB_SIZE:
                num_c = c
                break
        if num_r * num_c > best_area:
            best_area, best_r, best_c = num_r * num_c, num_r, num_c
    return [[tokens[(r0 + r) * canvas + c0 + c] - _OFFSET for c in range(best_c)] for r in range(best_r)]


def verify(puzzle: Grid, answer: Any) -> list[str]:
    """Shape and colour problems of `answer` (rectangular, 1..30 each side, colours 0-9).

    `puzzle` is unused: without the task's solution the content of an ARC answer cannot be
    checked, only its form. The argument keeps the codec signature the same for every task.
    """
    del puzzle
    errors = ErrorList()
    _parse_grid(answer, ("answer",), errors, CANVAS)
    out = [msg for _, msg in errors.errors]
    if errors.num_more:
        out.append(f"and {errors.num_more} more violations")
    return out[:MAX_VIOLATIONS]


def task_fingerprint(task: dict[str, Any] | ArcTask) -> str:
    """Content id of a task: sha256 of the canonical JSON of its train pairs and test inputs.

    The service uses it to recognise a posted task among the tasks a checkpoint was trained on
    (`arc_tasks` table, written by the ARC builder). Test outputs are excluded, since a posted
    task has none; extra keys ("name") are excluded. The order of the pairs does not count:
    ARC-AGI-2 lists many ARC-AGI-1 tasks with their demonstrations reordered, and the original
    builder's own de-duplication hash (`puzzle_hash`) sorts pairs too.
    """
    if not isinstance(task, ArcTask):
        task = parse_task(task)

    def dump(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    canonical = dump({
        "test": sorted(dump(g) for g in task.test_inputs),
        "train": sorted(dump({"input": i, "output": o}) for i, o in task.train),
    })
    return hashlib.sha256(canonical.encode()).hexdigest()
