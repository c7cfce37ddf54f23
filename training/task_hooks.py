"""Per-task pieces the trainer plugs in: online augmentation of one drawn example.

Sudoku uses the tasks helper's `SudokuAug` (the original `shuffle_sudoku`: digit relabelling,
transpose, band/row and stack/column shuffles), applied identically to puzzle and solution.
Maze and ARC are augmented offline by their builders (ARC versions carry their own puzzle ids, so an
online transform would not match the id); `augment_for` refuses them with that reason.
"""

from __future__ import annotations

import random

import numpy as np

from trm_core.tasks.augment import SudokuAug

from .config import ConfigError
from .stream import Augment

__all__ = ["augment_for", "augment_sudoku"]


def augment_sudoku(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random Sudoku symmetry applied to a puzzle's tokens [81] and its solution's tokens [81]."""
    aug = SudokuAug.random(random.Random(int(rng.integers(2**63))))
    # tokens: blank 1 -> digit 0, digit d (token d+1) -> d; the augmentation works on digit grids
    x = aug.apply((inputs.astype(np.int64) - 1).reshape(9, 9).tolist())
    y = aug.apply((labels.astype(np.int64) - 1).reshape(9, 9).tolist())
    return (np.asarray(x).reshape(81) + 1).astype(inputs.dtype), (np.asarray(y).reshape(81) + 1).astype(labels.dtype)


def augment_for(task: str) -> Augment:
    if task == "sudoku":
        return augment_sudoku
    raise ConfigError(f"data.augment=true has no online augmentation for task {task!r}: Maze and ARC are "
                      "augmented by their dataset builders; set data.augment=false")
