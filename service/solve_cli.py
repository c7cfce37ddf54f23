"""`trm solve sudoku|maze PUZZLE|FILE`: the serving engine without a server, one JSON line per puzzle.

PUZZLE is one puzzle on the command line (Sudoku: 81 characters; Maze: rows separated by '/' or
newlines). FILE is a puzzle CSV (`source,question,...`, plain or .gz: the shared data sets and the
maze generator's output), or a text file: Sudoku one puzzle per line, Maze one maze per block of
rows (blocks separated by blank lines). Each line written is the HTTP API's response body for that
puzzle, in input order, plus `index`.

Options left unset (`--views`, `--max-steps`, `--halting`) come from the model's recipe: the
model card's recommendation for hard puzzles, stored in the checkpoint. A model without one runs one
view, its own step budget and verified halting. The HTTP API's defaults never change with a recipe.

Exit code: 0 when every puzzle got a verified answer (`valid: true`), 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from service.registry import RegistryError
from service.settings import bundled_models
from service.tasks.grid import GRID_TASKS, GridTask, parse_all
from service.tasks.offline import load_served, solve_grids
from trm_core.checkpoint import Recipe, read_metadata
from trm_core.tasks import TaskInputError
from trm_core.tasks.puzzle_csv import iter_puzzle_csv

TASKS = GRID_TASKS


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


def read_puzzles(task: str, source: str) -> list[Any]:
    """The raw puzzles (strings or row lists) of a command-line PUZZLE or a FILE."""
    path = Path(source)
    if not path.is_file():
        if task == "maze":
            return [source.replace("/", "\n").split("\n")]
        return [source]
    if path.name.endswith((".csv", ".csv.gz")):
        return [row.question for row in iter_puzzle_csv(path)]
    text = path.read_text()
    if task == "sudoku":
        return [line.strip() for line in text.splitlines() if line.strip()]
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [[row for row in block.split("\n") if row] for block in blocks]


def _maze_from_csv_text(obj: Any, height: int, width: int) -> Any:
    """A CSV maze is one row-major string; the codec wants rows."""
    if isinstance(obj, str) and len(obj) == height * width and "\n" not in obj:
        return [obj[r * width:(r + 1) * width] for r in range(height)]
    return obj


def default_model(task: str) -> str:
    for path in bundled_models():
        if Path(path).stem == task:
            return path
    raise FileNotFoundError(f"no bundled {task} model; pass --model FILE.safetensors")


@dataclass(frozen=True)
class SolveOptions:
    """What each puzzle runs with: the flags given, else the model's recipe, else the plain defaults."""

    views: int
    max_steps: int | None  # None: the model's own halt_max_steps
    halting: str
    recipe: Recipe | None  # the recipe that filled an unset flag, if any


def solve_options(args: argparse.Namespace, recipe: Recipe | None) -> SolveOptions:
    """Flags first; then the recipe (unless --no-recipe); then 1 view, the model's steps, verified halting."""
    recipe = None if args.no_recipe else recipe
    used = recipe is not None and None in (args.views, args.max_steps, args.halting)
    return SolveOptions(
        views=args.views or (recipe.views if recipe else 1),
        max_steps=args.max_steps or (recipe.max_steps if recipe else None),
        halting=args.halting or (recipe.halting if recipe else "verified"),
        recipe=recipe if used else None)


def bundled_recipes() -> str:
    """"sudoku: 128 views, 16 steps, verified halting; maze: none" for `--help` (file headers only)."""
    parts = []
    for path in bundled_models():
        try:
            recipe = read_metadata(path).get("recipe")
        except (OSError, ValueError):
            continue
        parts.append(f"{Path(path).stem}: {recipe.describe() if recipe else 'none'}")
    return "; ".join(parts) or "no bundled models"


def run(args: argparse.Namespace, out: TextIO) -> int:
    task: GridTask = TASKS[args.task]
    path = args.model or default_model(args.task)
    opts = solve_options(args, read_metadata(path).get("recipe"))  # the header only; loading checks it again
    served = load_served(path, num_slots=args.batch, max_queue=max(4096, 2 * args.batch, opts.views),
                         stall_steps=args.stall_steps)
    if served.task != args.task:
        raise ValueError(f"{args.model} is a {served.task} model, not {args.task}")
    if opts.recipe is not None:
        running = Recipe(opts.views, opts.max_steps or served.config.halt_max_steps, opts.halting)
        _say(f"trm solve: the model's recipe: {opts.recipe.describe()}; running {running.describe()} "
             "(--views, --max-steps, --halting override it)")
    raw = read_puzzles(args.task, args.puzzle)
    if args.limit:
        raw = raw[:args.limit]
    if args.task == "maze":
        raw = [_maze_from_csv_text(obj, *served.grid_shape) for obj in raw]
    try:  # the server's validation: every puzzle parsed and checked for a solution before any runs
        grids = parse_all(task, raw, [("puzzle", i) for i in range(len(raw))], served)
    except TaskInputError as e:
        for loc, msg in e.errors[:20]:
            _say(f"trm solve: puzzle {loc[1]}: {msg}")
        return 2
    solved = 0
    results: Iterator[dict] = solve_grids(served, task, grids, halting=opts.halting, max_steps=opts.max_steps,
                                          views=opts.views, max_view_rows=args.max_view_rows)
    bar = tqdm(results, total=len(grids), desc=f"solve {args.task}", unit="puzzle", file=sys.stderr,
               disable=args.quiet or len(grids) < 2)
    for i, result in enumerate(bar):
        solved += bool(result["valid"])
        if args.no_timings:
            result.pop("timings", None)
        out.write(json.dumps({"index": i, **result}) + "\n")
        bar.set_postfix(solved=f"{solved}/{i + 1}")
    out.flush()
    _say(f"trm solve: {solved} of {len(grids)} puzzles solved (verified answers)")
    return 0 if solved == len(grids) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trm solve", description=__doc__.splitlines()[0],
        epilog="--views, --max-steps and --halting default to the model's recipe, the model card's "
               f"recommendation stored in the checkpoint (bundled: {bundled_recipes()}); without one, to "
               "1 view, the model's steps and verified halting. The HTTP API's defaults stay one view.")
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("puzzle", help="one puzzle, or a CSV / text file of puzzles")
    p.add_argument("--model", help="a trm-serve .safetensors file (default: the bundled model of the task)")
    p.add_argument("--views", type=int, default=None,
                   help="symmetric versions run per puzzle (default: the model's recipe, else 1)")
    p.add_argument("--halting", choices=("learned", "verified", "fixed"), default=None,
                   help="default: the model's recipe, else verified")
    p.add_argument("--max-steps", type=int, default=None,
                   help="ACT steps per view (default: the model's recipe, else the model's own)")
    p.add_argument("--no-recipe", action="store_true", help="ignore the model's recipe (1 view unless --views)")
    p.add_argument("--max-view-rows", type=int, default=16, help="rows of one puzzle's views stepping at once")
    p.add_argument("--stall-steps", type=int, default=0, help="stop a verified row unchanged this many steps")
    p.add_argument("--batch", type=int, default=64, help="rows stepped together (slots)")
    p.add_argument("--limit", type=int, default=0, help="only the first N puzzles")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--output", help="write JSON lines here instead of stdout")
    p.add_argument("--no-timings", action="store_true", help="leave timings out (reproducible output)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(v is not None and v < 1 for v in (args.views, args.max_steps)):
        _say("trm solve: error: --views and --max-steps must be >= 1")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.output:
            with open(args.output, "w") as out:
                return run(args, out)
        return run(args, sys.stdout)
    except (FileNotFoundError, ValueError, RegistryError) as e:
        _say(f"trm solve: error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
