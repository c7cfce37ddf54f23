"""Raw puzzle CSVs (`source,question,answer,rating`, plain or .gz): the one reader for them.

The layout of the Sudoku files (HF sudoku-extreme and the forum lists), of HF maze-30x30-hard-1k
and of the maze generator's output. `read_puzzle_csv` returns the rows as text; `read_sudoku_csv`
returns every Sudoku row as digit tensors, each row checked (the question parses, the answer is a
solution of it) in one vectorised pass, with the codec's message for the first bad row. Builders,
`trm eval` and the trainer's raw-CSV input all read through here.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import sudoku

__all__ = ["CsvPuzzle", "HEADER", "iter_puzzle_csv", "read_puzzle_csv", "read_sudoku_csv"]

HEADER = ["source", "question", "answer", "rating"]


@dataclass(frozen=True)
class CsvPuzzle:
    line: int  # 1-based line number in the file (header is line 1), for error messages
    source: str
    question: str
    answer: str
    rating: str


def iter_puzzle_csv(path: str | Path) -> Iterator[CsvPuzzle]:
    """The rows of a puzzle CSV in file order; a wrong header or column count fails naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        names = [h.strip().lower() for h in header or []]
        if names[:2] not in (["source", "question"], ["source", "q"]):  # ours / HF sudoku-extreme
            raise ValueError(f"{path}: header is {header}; expected {','.join(HEADER)}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 4:
                raise ValueError(f"{path} line {line}: {len(row)} columns; expected 4 ({','.join(HEADER)})")
            yield CsvPuzzle(line, *row)


def read_puzzle_csv(path: str | Path, *, limit: int = 0,
                    keep: Callable[[CsvPuzzle], bool] | None = None) -> list[CsvPuzzle]:
    """All rows of a puzzle CSV (those `keep` accepts; the first `limit` of them when limit > 0)."""
    rows: list[CsvPuzzle] = []
    for row in iter_puzzle_csv(path):
        if keep is None or keep(row):
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows


def _digits(texts: list[str]) -> torch.Tensor:
    """81-char Sudoku strings ('.'/'0' blank) -> int16 [N, 81]; any other character becomes -1."""
    raw = torch.frombuffer(bytearray("".join(texts).encode("latin-1", "replace")), dtype=torch.uint8)
    d = raw.view(len(texts), sudoku.SEQ_LEN).to(torch.int16)
    d = torch.where(d == ord("."), ord("0"), d) - ord("0")
    return torch.where((d >= 0) & (d <= 9), d, -1)


def read_sudoku_csv(path: str | Path, *, min_rating: int | None = None,
                    limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Puzzles and solutions as digit tensors uint8 [N, 9, 9] (0 = blank), every row checked.

    Keeps the rows with rating >= `min_rating` (when given), then the first `limit` (0 = all).
    Each question must parse and each answer must be a valid solution of it; the first bad row
    fails with the file, the line and the codec's message (`sudoku.parse` / `sudoku.verify`).
    """
    path = Path(path)
    keep = None if min_rating is None else (lambda r: int(r.rating) >= min_rating)
    rows = read_puzzle_csv(path, limit=limit, keep=keep)
    n = len(rows)
    if n == 0:
        empty = torch.zeros(0, sudoku.SIZE, sudoku.SIZE, dtype=torch.uint8)
        return empty, empty.clone()
    sized = torch.tensor([len(r.question) == sudoku.SEQ_LEN and len(r.answer) == sudoku.SEQ_LEN for r in rows])
    blank = "." * sudoku.SEQ_LEN  # stands in for a wrong-length row, which is reported below anyway
    q = _digits([r.question if ok else blank for r, ok in zip(rows, sized.tolist(), strict=True)])
    a = _digits([r.answer if ok else blank for r, ok in zip(rows, sized.tolist(), strict=True)])
    good = sized & (q >= 0).all(1) & sudoku.is_solution_batch(q, a)
    if not bool(good.all()):
        _raise_for_row(path, rows[int((~good).nonzero()[0])])
    shape = (n, sudoku.SIZE, sudoku.SIZE)
    return q.to(torch.uint8).view(shape), a.to(torch.uint8).view(shape)


def _raise_for_row(path: Path, row: CsvPuzzle) -> None:
    """The codec's own error for a row the vectorised check refused."""
    question = sudoku.parse(row.question, loc=(path.name, row.line, "question"))
    answer = sudoku.parse(row.answer, loc=(path.name, row.line, "answer"))
    problems = sudoku.verify(question, answer)
    raise ValueError(f"{path} line {row.line}: the answer is not a solution: {'; '.join(problems[:3])}")
