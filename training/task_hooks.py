"""Per-task pieces the trainer plugs in: online augmentation of one drawn example.

Sudoku draws a `trm_core.tasks.augment.SudokuAug` (the original `shuffle_sudoku`: digit relabelling,
transpose, band/row and stack/column shuffles) and applies it to the puzzle's and the solution's tokens
with `SudokuAugBatch.apply_tokens`, the same code the builder and the service run.
Maze and ARC are augmented offline by their builders (ARC versions carry their own puzzle ids, so an
online transform would not match the id); `augment_for` refuses them with that reason.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from trm_core.tasks.augment import SudokuAug, SudokuAugBatch

from .config import ConfigError
from .stream import Augment

__all__ = ["augment_for", "augment_sudoku"]


def augment_sudoku(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random Sudoku symmetry applied to a puzzle's tokens [81] and its solution's tokens [81]."""
    aug = SudokuAugBatch.stack([SudokuAug.random(random.Random(int(rng.integers(2**63))))])
    x = aug.apply_tokens(torch.tensor(np.asarray(inputs))[None])[0]
    y = aug.apply_tokens(torch.tensor(np.asarray(labels))[None])[0]
    return x.numpy(), y.numpy()


def augment_for(task: str) -> Augment:
    if task == "sudoku":
        return augment_sudoku
    raise ConfigError(f"data.augment=true has no online augmentation for task {task!r}: Maze and ARC are "
                      "augmented by their dataset builders; set data.augment=false")
