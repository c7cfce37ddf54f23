"""Sudoku dataset builder: raw CSV -> the original on-disk layout, with the original recipe.

Recipe (`dataset/build_sudoku_dataset.py`): train = N puzzles drawn without replacement
(default 1000) x (1 original + K augmentations, default 1000), each augmentation its own puzzle
with one example, the original plus its augmentations one group; test = the test CSV without
augmentation. Tokens: blank 1, digit d -> d + 1; labels = the full solution. Every puzzle id is
0 (one shared embedding).

The original draws from numpy's global legacy stream without seeding it; this builder draws the
same calls in the same order from `np.random.RandomState(seed)` (the subsample, then per
training puzzle per augmentation the digit permutation, the transpose coin, the band order and
rows, the stack order and columns), so its arrays equal the original's run after
`np.random.seed(seed)` (values equal; the original stores augmented train arrays as int64, ours
uint8). `test_limit` (ours) draws after everything the original draws.

The augmentation is the original `shuffle_sudoku` as `trm_core.tasks.augment.SudokuAugBatch`
(many puzzles at once); the CSV reader is `trm_core.tasks.puzzle_csv.read_sudoku_csv`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trm_core.tasks import sudoku
from trm_core.tasks.augment import SudokuAugBatch
from trm_core.tasks.puzzle_csv import read_sudoku_csv

from .dataset import PuzzleSplit, save_identifiers, save_split

__all__ = ["SudokuBuildConfig", "random_sudoku_augs", "build_sudoku"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SudokuBuildConfig:
    train_csv: Path
    test_csv: Path
    out: Path
    subsample: int | None = 1000  # training puzzles drawn without replacement (None = all)
    num_aug: int = 1000  # augmentations per training puzzle
    test_limit: int | None = None  # test puzzles kept, a seeded random subset (None = all)
    min_rating: int | None = None  # keep puzzles with rating >= this (the original's min_difficulty)
    seed: int = 0


def random_sudoku_augs(rng: np.random.RandomState, n: int) -> SudokuAugBatch:
    """n random Sudoku symmetries: the original `shuffle_sudoku`'s draws, call for call, from `rng`."""
    digits = np.zeros((n, 10), np.int64)
    transpose = np.zeros(n, bool)
    rows = np.zeros((n, 9), np.int64)
    cols = np.zeros((n, 9), np.int64)
    for i in range(n):
        digits[i, 1:] = rng.permutation(np.arange(1, 10))
        transpose[i] = rng.rand() < 0.5
        rows[i] = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
        cols[i] = np.concatenate([s * 3 + rng.permutation(3) for s in rng.permutation(3)])
    return SudokuAugBatch(torch.from_numpy(digits), torch.from_numpy(transpose), torch.from_numpy(rows),
                          torch.from_numpy(cols))


def _read(path: Path, min_rating: int | None) -> tuple[np.ndarray, np.ndarray]:
    puzzles, solutions = read_sudoku_csv(path, min_rating=min_rating)
    return puzzles.numpy(), solutions.numpy()


def _split(puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, rng: np.random.RandomState,
           desc: str) -> PuzzleSplit:
    n = puzzles.shape[0]
    per = 1 + num_aug
    inputs = np.zeros((n * per, sudoku.SEQ_LEN), np.uint8)
    labels = np.zeros((n * per, sudoku.SEQ_LEN), np.uint8)
    chunk = max(1, 100_000 // per)  # ~100k augmentations per numpy call keeps memory small
    for lo in tqdm(range(0, n, chunk), desc=desc, unit="chunk"):
        hi = min(n, lo + chunk)
        k = hi - lo
        src_q = np.repeat(puzzles[lo:hi], num_aug, axis=0)
        src_a = np.repeat(solutions[lo:hi], num_aug, axis=0)
        q = np.zeros((k, per, 9, 9), np.uint8)
        a = np.zeros((k, per, 9, 9), np.uint8)
        q[:, 0], a[:, 0] = puzzles[lo:hi], solutions[lo:hi]  # the first of each group is not augmented
        if num_aug:
            augs = random_sudoku_augs(rng, k * num_aug)
            q[:, 1:] = augs.apply(torch.from_numpy(src_q)).numpy().reshape(k, num_aug, 9, 9)
            a[:, 1:] = augs.apply(torch.from_numpy(src_a)).numpy().reshape(k, num_aug, 9, 9)
        inputs[lo * per:hi * per] = sudoku.encode_batch(torch.from_numpy(q)).numpy().reshape(-1, sudoku.SEQ_LEN)
        labels[lo * per:hi * per] = sudoku.encode_batch(torch.from_numpy(a)).numpy().reshape(-1, sudoku.SEQ_LEN)
    ar = np.arange(n * per + 1, dtype=np.int32)
    meta = {"vocab_size": sudoku.VOCAB_SIZE, "seq_len": sudoku.SEQ_LEN, "num_puzzle_identifiers": 1,
            "task": "sudoku", "grid_height": sudoku.SIZE, "grid_width": sudoku.SIZE}
    return PuzzleSplit(inputs, labels, np.zeros(n * per, np.int32), ar,
                       np.arange(0, n * per + 1, per, dtype=np.int32), meta)


def build_sudoku(cfg: SudokuBuildConfig) -> dict[str, int]:
    """Build `cfg.out/{train,test}` and `identifiers.json`; returns example counts per split."""
    rng = np.random.RandomState(cfg.seed)  # the original's legacy stream, here seeded
    puzzles, solutions = _read(cfg.train_csv, cfg.min_rating)
    if cfg.subsample is not None and cfg.subsample < len(puzzles):
        keep = rng.choice(len(puzzles), size=cfg.subsample, replace=False)
        puzzles, solutions = puzzles[keep], solutions[keep]
    train = _split(puzzles, solutions, cfg.num_aug, rng, "train")
    puzzles, solutions = _read(cfg.test_csv, cfg.min_rating)
    if cfg.test_limit is not None and cfg.test_limit < len(puzzles):
        keep = np.sort(rng.choice(len(puzzles), size=cfg.test_limit, replace=False))
        puzzles, solutions = puzzles[keep], solutions[keep]
    test = _split(puzzles, solutions, 0, rng, "test")
    source = {"source_train": str(cfg.train_csv), "source_test": str(cfg.test_csv), "seed": cfg.seed}
    train.meta.update(source, num_aug=cfg.num_aug)
    test.meta.update(source, num_aug=0)
    save_split(cfg.out, "train", train)
    save_split(cfg.out, "test", test)
    save_identifiers(cfg.out, ["<blank>"])
    return {"train": train.num_examples, "test": test.num_examples}
