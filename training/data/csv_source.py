"""Read the raw puzzle CSVs (`source,question,answer,rating`, plain or .gz): Sudoku files in
../shared/data/sudoku, HF sudoku-extreme / maze-30x30-hard-1k, and our maze generator's output."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CsvPuzzle", "read_puzzle_csv"]

HEADER = ["source", "question", "answer", "rating"]


@dataclass(frozen=True)
class CsvPuzzle:
    line: int  # 1-based line number in the file (header is line 1), for error messages
    source: str
    question: str
    answer: str
    rating: str


def read_puzzle_csv(path: str | Path) -> list[CsvPuzzle]:
    """All rows of a puzzle CSV; a wrong header or column count fails naming the file and line."""
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
        rows = []
        for line, row in enumerate(reader, start=2):
            if len(row) != 4:
                raise ValueError(f"{path} line {line}: {len(row)} columns; expected 4 ({','.join(HEADER)})")
            rows.append(CsvPuzzle(line, *row))
    return rows
