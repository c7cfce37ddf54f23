"""Maze dataset builder: Maze-Hard-style CSVs (or freshly generated mazes) -> the original layout.

Recipe (`dataset/build_maze_dataset.py`): 1000 train + 1000 test mazes; charset "# SGo" ->
ids 1..5, PAD 0, vocab 6, seq = height*width; every puzzle id 0. With `aug` (our default, as the
paper's "1000 examples, 8 augments"; the original script defaults to off) each training maze is
one group of its 8 dihedral transforms, each transform its own puzzle with one example; the test
split is never augmented. Every row is checked with the maze codec (shape, one S and one G) and
its answer with `maze.verify` + `maze.is_shortest`, so a bad row fails naming file and line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trm_core.tasks import maze
from trm_core.tasks.augment import dihedral_rows
from trm_core.tasks.puzzle_csv import read_puzzle_csv

from .dataset import PuzzleSplit, save_identifiers, save_split
from .maze_gen import MazeGenConfig, generate_split, split_rngs, write_csv

__all__ = ["MazeBuildConfig", "read_maze_csv", "build_maze"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MazeBuildConfig:
    out: Path
    train_csv: Path | None = None  # None with generate=True: make the mazes with maze_gen
    test_csv: Path | None = None
    generate: bool = False
    num_train: int = 1000  # generated mazes (generate=True only)
    num_test: int = 1000
    seed: int = 0
    aug: bool = True  # 8 dihedral transforms per training maze
    canonical: bool = False  # label each maze as seen with maze.canonical_shortest_path (not the CSV's route)
    size: int = 30  # generated maze side


def read_maze_csv(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(puzzles, answers) as row-string grids; side taken from the first row (square grids)."""
    rows = read_puzzle_csv(path)
    if not rows:
        raise ValueError(f"{path} has no mazes")
    side = int(round(len(rows[0].question) ** 0.5))
    puzzles, answers = [], []
    for row in tqdm(rows, desc=f"read {path.name}", unit="maze", leave=False):
        p = maze.parse(row.question, height=side, width=side, loc=(path.name, row.line, "question"))
        a = maze.parse(row.answer, height=side, width=side, loc=(path.name, row.line, "answer"))
        problems = maze.verify(p, a)
        if problems:
            raise ValueError(f"{path} line {row.line}: the answer is not a valid path: {'; '.join(problems[:3])}")
        if not maze.is_shortest(p, a):
            raise ValueError(f"{path} line {row.line}: the answer path is valid but not a shortest one")
        puzzles.append(p)
        answers.append(a)
    return puzzles, answers


def _split(puzzles: list[list[str]], answers: list[list[str]], aug: bool, canonical: bool = False) -> PuzzleSplit:
    """With `canonical`, each maze as seen (each transform) is labelled with its canonical route, so
    the label is a function of the input; otherwise the CSV's route, transformed with the maze."""
    height, width = len(puzzles[0]), len(puzzles[0][0])
    # a non-square maze keeps its shape only under identity, 180-degree turn and the two flips
    ks = (range(8) if height == width else (0, 2, 4, 5)) if aug else range(1)
    inputs, labels = [], []
    for p, a in zip(puzzles, answers, strict=True):
        for k in ks:
            seen = dihedral_rows(p, k)
            label = maze.mark_path(seen, maze.canonical_shortest_path(seen)) if canonical else dihedral_rows(a, k)
            inputs.append(maze.encode(seen))
            labels.append(maze.encode(label))
    n = len(inputs)
    per = len(ks)
    meta = {"vocab_size": maze.VOCAB_SIZE, "seq_len": height * width, "num_puzzle_identifiers": 1,
            "task": "maze", "grid_height": height, "grid_width": width}
    return PuzzleSplit(np.array(inputs, np.uint8), np.array(labels, np.uint8), np.zeros(n, np.int32),
                       np.arange(n + 1, dtype=np.int32), np.arange(0, n + 1, per, dtype=np.int32), meta)


def build_maze(cfg: MazeBuildConfig) -> dict[str, int]:
    """Build `cfg.out/{train,test}` and `identifiers.json`; generated mazes are also kept as
    `cfg.out/raw/{train,test}.csv` so the exact puzzles can be inspected or reused."""
    if cfg.generate:
        gen = MazeGenConfig(height=cfg.size, width=cfg.size)
        train_rng, test_rng = split_rngs(cfg.seed)
        train_m = generate_split(gen, cfg.num_train, train_rng, desc="train mazes")
        test_m = generate_split(gen, cfg.num_test, test_rng, exclude={m.question for m in train_m},
                                desc="test mazes")
        raw = cfg.out / "raw"
        write_csv(raw / "train.csv", train_m, f"trm-serve maze_gen seed={cfg.seed}")
        write_csv(raw / "test.csv", test_m, f"trm-serve maze_gen seed={cfg.seed}")
        train_csv, test_csv = raw / "train.csv", raw / "test.csv"
    elif cfg.train_csv is None or cfg.test_csv is None:
        raise ValueError("give both --train and --test CSVs, or --generate")
    else:
        train_csv, test_csv = cfg.train_csv, cfg.test_csv
    train = _split(*read_maze_csv(train_csv), cfg.aug, cfg.canonical)
    test = _split(*read_maze_csv(test_csv), False, cfg.canonical)
    for split in (train, test):
        split.meta.update(source_train=str(train_csv), source_test=str(test_csv), seed=cfg.seed,
                          labels="canonical" if cfg.canonical else "csv")
    train.meta["aug"] = cfg.aug
    save_split(cfg.out, "train", train)
    save_split(cfg.out, "test", test)
    save_identifiers(cfg.out, ["<blank>"])
    return {"train": train.num_examples, "test": test.num_examples}
