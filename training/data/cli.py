"""`trm build-data sudoku|maze|arc|maze-gen ...`: build datasets in the original on-disk layout.

The `trm` entry point (trm_cli) calls `main(argv)` with the arguments after `build-data`; also
runnable as `python -m training.data.cli`. Each subcommand's `--help` lists every option with
its default; recipes and the format are in training/data/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from trm_core.tasks import TaskInputError

from . import maze_gen
from .build_arc import ArcBuildConfig, build_arc
from .build_maze import MazeBuildConfig, build_maze
from .build_sudoku import SudokuBuildConfig, build_sudoku
from .dataset import DatasetFormatError

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)
_FMT = argparse.ArgumentDefaultsHelpFormatter


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all", "0") else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trm build-data", description=__doc__.split("\n\n")[0], formatter_class=_FMT)
    sub = p.add_subparsers(dest="task", required=True, metavar="{sudoku,maze,arc,maze-gen}")

    s = sub.add_parser("sudoku", help="Sudoku CSVs -> N puzzles x (1 + K augmentations)", formatter_class=_FMT)
    s.add_argument("--train", type=Path, required=True, help="training CSV(.gz), e.g. "
                   "../shared/data/sudoku/forum_hardest_1905_11plus_train_1k.csv")
    s.add_argument("--test", type=Path, required=True, help="test CSV(.gz)")
    s.add_argument("--out", type=Path, required=True, help="output dataset directory")
    s.add_argument("--subsample", type=_optional_int, default=1000, help="training puzzles drawn ('all' keeps all)")
    s.add_argument("--num-aug", type=int, default=1000, help="augmentations per training puzzle")
    s.add_argument("--test-limit", type=_optional_int, default=None, help="keep a random subset of test puzzles")
    s.add_argument("--min-rating", type=int, default=None, help="keep puzzles with rating >= this")
    s.add_argument("--seed", type=int, default=0, help="seeds the subsample, augmentations and test subset")

    m = sub.add_parser("maze", help="maze CSVs (or generated mazes) -> 1000 + 8 dihedral", formatter_class=_FMT)
    m.add_argument("--train", type=Path, default=None, help="training CSV in the Maze-Hard layout")
    m.add_argument("--test", type=Path, default=None, help="test CSV in the Maze-Hard layout")
    m.add_argument("--generate", action="store_true", help="generate the mazes (training/data/maze_gen.py) "
                   "instead of reading CSVs; they are also saved to <out>/raw/")
    m.add_argument("--num-train", type=int, default=1000, help="generated training mazes")
    m.add_argument("--num-test", type=int, default=1000, help="generated test mazes")
    m.add_argument("--size", type=int, default=30, help="generated maze side")
    m.add_argument("--no-aug", dest="aug", action="store_false", help="skip the 8 dihedral transforms")
    m.add_argument("--canonical", action="store_true", help="label each maze as seen (each transform) with "
                   "its canonical shortest route (trm_core.tasks.maze.canonical_shortest_path) instead of the "
                   "CSV's route turned with it: a maze has several shortest routes, and only a label that is a "
                   "function of the input can be learned")
    m.add_argument("--out", type=Path, required=True, help="output dataset directory")
    m.add_argument("--seed", type=int, default=0, help="seeds the generated mazes")

    a = sub.add_parser("arc", help="ARC tasks -> up to 1+K versions per task, as the original builder",
                       formatter_class=_FMT)
    a.add_argument("--subsets", nargs="+", required=True, help="subset names with --input-file-prefix (as the "
                   "original: training evaluation concept), else task folders or *_challenges.json files "
                   "relative to --source")
    a.add_argument("--input-file-prefix", type=Path, default=None, help="as the original: subset S is "
                   "<prefix>_S_challenges.json, e.g. TinyRecursiveModels/kaggle/combined/arc-agi")
    a.add_argument("--test-set", "--test-set-name", dest="test_set", default=None, help="the subset whose test "
                   "pairs are held out (e.g. evaluation, or arc-agi-1/evaluation)")
    a.add_argument("--source", type=Path, default=Path("."), help="directory the subset paths are relative to")
    a.add_argument("--out", "--output-dir", dest="out", type=Path, required=True, help="output dataset directory")
    a.add_argument("--num-aug", type=int, default=1000, help="augmented versions per task (plus the original)")
    a.add_argument("--max-tasks", type=_optional_int, default=None, help="first N tasks of each subset (small runs)")
    a.add_argument("--no-translate", dest="translate", action="store_false",
                   help="keep every training example at canvas offset (0, 0)")
    a.add_argument("--drop-overlap", action="store_true", help="drop tasks equal to a test-set task and later "
                   "repeats of a task (the original keeps them; puzzle ids then differ from the original's)")
    a.add_argument("--seed", type=int, default=42, help="seeds shuffling, versions and translations "
                   "(42 as the original)")

    g = sub.add_parser("maze-gen", help="only write generated maze CSVs (train.csv, test.csv)", formatter_class=_FMT)
    maze_gen.add_arguments(g)
    return p


def _run(args: argparse.Namespace) -> dict:
    if args.task == "sudoku":
        return build_sudoku(SudokuBuildConfig(
            train_csv=args.train, test_csv=args.test, out=args.out, subsample=args.subsample,
            num_aug=args.num_aug, test_limit=args.test_limit, min_rating=args.min_rating, seed=args.seed))
    if args.task == "maze":
        if not args.generate and (args.train is None or args.test is None):
            raise ValueError("give --train and --test CSVs, or --generate")
        return build_maze(MazeBuildConfig(
            out=args.out, train_csv=args.train, test_csv=args.test, generate=args.generate,
            num_train=args.num_train, num_test=args.num_test, seed=args.seed, aug=args.aug, size=args.size,
            canonical=args.canonical))
    if args.task == "arc":
        def subset(name: str) -> Path:
            if args.input_file_prefix is not None:
                return Path(f"{args.input_file_prefix}_{name}_challenges.json")
            return args.source / name
        return build_arc(ArcBuildConfig(
            out=args.out, subsets=tuple(subset(p) for p in args.subsets),
            test_set=subset(args.test_set) if args.test_set else None, num_aug=args.num_aug, seed=args.seed,
            max_tasks=args.max_tasks, translate=args.translate, drop_overlap=args.drop_overlap))
    return maze_gen.run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logger.info("build-data %s: %s", args.task, {k: str(v) for k, v in vars(args).items()})
    t0 = time.perf_counter()
    try:
        result = _run(args)
    except (ValueError, FileNotFoundError, TaskInputError, DatasetFormatError) as e:
        print(f"trm build-data {args.task}: {e}", file=sys.stderr)
        return 1
    logger.info("done in %.1f s: %s", time.perf_counter() - t0, json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
