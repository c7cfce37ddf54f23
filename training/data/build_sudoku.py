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


_MASKS = (0, 1, 3, 3, 7, 7, 7, 7, 15)  # smallest all-ones mask >= i, for i = 0..8


def random_sudoku_augs(rng: np.random.RandomState, n: int) -> SudokuAugBatch:
    """n random Sudoku symmetries: the original `shuffle_sudoku`'s draws from `rng`, call for call.

    Per symmetry the original calls `permutation(1..9)`, `rand()`, then for rows and for columns
    `permutation(3)` (block order) and three `permutation(3)` (within blocks). A legacy
    `permutation(k)` is a Fisher-Yates shuffle drawing, for i = k-1 down to 1, a raw 32-bit output
    masked to the smallest all-ones mask >= i until it is <= i; `rand()` takes two raw outputs.
    Those rules are replayed here on the raw stream read in bulk (a million calls one by one take
    minutes), and `rng` is left exactly where the calls would have left it.
    """
    name, key, pos, has_gauss, gauss = rng.get_state()
    bits = np.random.MT19937()
    bits.state = {"bit_generator": name, "state": {"key": key, "pos": pos}}
    raw: list[int] = []
    at = drawn = 0
    digits: list[list[int]] = []
    coins: list[float] = []
    perms: list[list[int]] = []

    def interval(top: int) -> int:
        nonlocal at
        mask = _MASKS[top]
        while True:
            value = raw[at] & mask
            at += 1
            if value <= top:
                return value

    def shuffled(items: list[int]) -> list[int]:
        for i in range(len(items) - 1, 0, -1):
            j = interval(i)
            items[i], items[j] = items[j], items[i]
        return items

    for _ in range(n):
        if at + 256 > len(raw):  # enough for one symmetry with many rejections
            more = max(256, min(65536, 64 * n))
            raw = raw[at:] + bits.random_raw(more).tolist()
            at = 0
            drawn += more
        digits.append(shuffled(list(range(1, 10))))
        coins.append(((raw[at] >> 5) * 67108864.0 + (raw[at + 1] >> 6)) / 9007199254740992.0)
        at += 2
        for _axis in range(2):
            blocks = shuffled([0, 1, 2])
            perms.append([b * 3 + v for b in blocks for v in shuffled([0, 1, 2])])
    # leave `rng` after exactly the outputs used: from its start state, skip them
    rewound = np.random.MT19937()
    rewound.state = {"bit_generator": name, "state": {"key": key, "pos": pos}}
    rewound.random_raw(drawn - (len(raw) - at))
    state = rewound.state["state"]
    rng.set_state((name, state["key"], state["pos"], has_gauss, gauss))
    digit_map = np.zeros((n, 10), np.int64)
    digit_map[:, 1:] = np.array(digits, np.int64).reshape(n, 9)
    p = np.array(perms, np.int64).reshape(n, 2, 9)
    return SudokuAugBatch(torch.from_numpy(digit_map), torch.from_numpy(np.array(coins) < 0.5),
                          torch.from_numpy(p[:, 0].copy()), torch.from_numpy(p[:, 1].copy()))


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
