"""Shared helpers for the task tests: where the real data lives and how to read it.

The data sits beside the checkout (`../shared`, as in CI); nothing in the product needs it. A
clone without it fails these tests, naming the missing path (`tests.conftest.require_shared`).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests.conftest import DATA, SHARED, require_shared

__all__ = ["ARC_DIR", "DATA", "SHARED", "SUDOKU_DIR", "arc_tasks", "read_csv_rows", "sudoku_rows"]

SUDOKU_DIR = DATA / "sudoku"
ARC_DIR = DATA / "arc"


def read_csv_rows(path: Path) -> Iterator[list[str]]:
    """Rows of a `source,question,answer,rating` CSV (plain or .gz), header skipped."""
    require_shared(path, "a puzzle CSV")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        yield from reader


@cache
def sudoku_rows(name: str, limit: int | None = None) -> tuple[tuple[str, str], ...]:
    out = []
    for row in read_csv_rows(SUDOKU_DIR / name):
        out.append((row[1], row[2]))
        if limit is not None and len(out) >= limit:
            break
    return tuple(out)


@cache
def arc_tasks(folder: str) -> dict[str, dict]:
    """task id (file stem) -> task JSON for every task file under `ARC_DIR / folder`."""
    root = require_shared(ARC_DIR / folder, "ARC task files")
    return {p.stem: json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}
