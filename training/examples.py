"""Training/evaluation examples in memory, from a built dataset or a raw Sudoku CSV.

`Examples` is the in-memory form of one split of the original .npy layout (docs/MODEL_SPEC.md, "data"):
token arrays plus the puzzle/group offsets the original sampler walks. Labels use -100 for
"ignored" here (the files store 0, the original loader maps it; so do we).

Two sources:
- a built dataset directory (`<dir>/<split>/dataset.json` + `all__*.npy`), read and validated by
  `training.data.dataset.load_split`;
- a raw Sudoku CSV or CSV.gz (`source,question,answer,rating`, '.' or '0' blank), read by
  `trm_core.tasks.puzzle_csv.read_sudoku_csv`: one puzzle per row, one example per puzzle, puzzle
  id 0, each puzzle its own group (what the Sudoku builder writes before augmentation). This lets
  `trm eval` and small runs read ../shared/data files directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_core.loss import IGNORE_LABEL
from trm_core.tasks import sudoku
from trm_core.tasks.puzzle_csv import read_sudoku_csv

from .data.dataset import PuzzleSplit, load_split

__all__ = ["Examples", "DataError", "load_examples"]

SUDOKU_BLANK = sudoku.BLANK  # kept for importers; the fact lives in trm_core.tasks.sudoku


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file, row and field."""


@dataclass
class Examples(PuzzleSplit):
    """One split in memory (the five arrays of `PuzzleSplit`), labels as int16 with IGNORE_LABEL (-100)
    where the file stores 0, plus what the trainer and evaluator ask of it."""

    @property
    def seq_len(self) -> int:
        return int(self.inputs.shape[1])

    def example_puzzle_ids(self) -> np.ndarray:
        """int32 [N]: the puzzle-embedding id of every example."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_identifiers, counts).astype(np.int32)

    def mean_puzzle_examples(self) -> float:
        return float(self.num_examples) / max(1, len(self.puzzle_identifiers))

    def head(self, n: int) -> Examples:
        """The first `n` puzzles (with all their examples); groups cut to match. n <= 0 = everything."""
        P = len(self.puzzle_identifiers)
        if n <= 0 or n >= P:
            return self
        end = int(self.puzzle_indices[n])
        groups = self.group_indices[self.group_indices <= n]
        if groups[-1] != n:
            groups = np.append(groups, n)
        return Examples(self.inputs[:end], self.labels[:end], self.puzzle_identifiers[:n],
                        self.puzzle_indices[: n + 1], groups.astype(np.int32), dict(self.meta))

    def split_tail(self, n: int) -> tuple[Examples, Examples]:
        """(all but the last `n` puzzles, the last `n`), for data where each puzzle is its own group."""
        P = len(self.puzzle_identifiers)
        if self.num_groups != P:
            raise DataError("data.holdout needs one puzzle per group (a raw CSV); a built dataset has its "
                            "own test split: set data.eval_path instead")
        if not 0 < n < P:
            raise DataError(f"data.holdout={n} must be between 1 and {P - 1} (the data has {P} puzzles)")
        cut = int(self.puzzle_indices[P - n])
        keep = Examples(self.inputs[:cut], self.labels[:cut], self.puzzle_identifiers[: P - n],
                        self.puzzle_indices[: P - n + 1], self.group_indices[: P - n + 1], dict(self.meta))
        rest_pidx = (self.puzzle_indices[P - n:] - cut).astype(np.int32)
        held = Examples(self.inputs[cut:], self.labels[cut:], self.puzzle_identifiers[P - n:], rest_pidx,
                        np.arange(n + 1, dtype=np.int32), dict(self.meta))
        return keep, held


def _from_sudoku_csv(path: Path, limit: int) -> Examples:
    try:
        puzzles, solutions = read_sudoku_csv(path, limit=limit)
    except (ValueError, OSError) as e:  # the reader names the file, the line and the problem
        raise DataError(str(e)) from e
    inputs = sudoku.encode_batch(puzzles).numpy()
    labels = sudoku.encode_batch(solutions).numpy().astype(np.int16)
    n = inputs.shape[0]
    ar = np.arange(n + 1, dtype=np.int32)
    meta = {"source": str(path), "seq_len": sudoku.SEQ_LEN, "vocab_size": sudoku.VOCAB_SIZE,
            "num_puzzle_identifiers": 1, "task": "sudoku", "total_groups": n, "mean_puzzle_examples": 1.0}
    return Examples(inputs, labels, np.zeros(n, np.int32), ar, ar.copy(), meta)


def _from_built(root: Path, split: str) -> Examples:
    """Read `<root>/<split>/all__*.npy` (original layout) via `load_split`; the label 0 on disk means ignored."""
    try:
        s = load_split(root, split)
    except (ValueError, OSError) as e:  # DatasetFormatError names the file and the problem
        raise DataError(f"{root}: {e}") from e
    inputs, labels, pids = s.inputs, s.labels, s.puzzle_identifiers
    pidx, gidx, meta = s.puzzle_indices, s.group_indices, dict(s.meta)
    ignore_id = int(meta.get("ignore_label_id", 0) or 0)
    labels = labels.astype(np.int16)
    labels[labels == ignore_id] = IGNORE_LABEL
    meta.setdefault("source", str(root / split))
    return Examples(inputs, labels, np.asarray(pids, np.int32), np.asarray(pidx, np.int32),
                    np.asarray(gidx, np.int32), meta)


def load_examples(path: str | Path, split: str = "train", limit: int = 0) -> Examples:
    """Examples from a built dataset dir (its `split`) or a raw Sudoku CSV(.gz) (`split` ignored).

    `limit` keeps the first N puzzles (0 = all).
    """
    p = Path(path)
    if p.is_dir():
        return _from_built(p, split).head(limit)
    if p.name.endswith((".csv", ".csv.gz")):
        return _from_sudoku_csv(p, limit)
    raise DataError(f"data path {str(p)!r} is neither a built dataset directory nor a .csv/.csv.gz file")
