"""`trm`: one command for the whole stack, above the packages that implement it.

Each subcommand is one row of `COMMANDS`: the function that runs it (`module:function`, called
with the arguments after the subcommand, returning the exit code), its help line and, for parts an
install may lack, the extra that brings them. The module is imported only when its subcommand runs,
so `trm serve` never loads the trainer and `trm info` loads neither. trm_core, training and service
know nothing of this table; registering a subcommand is one line here.

An install without a part (the inference image has no `training/`) still lists every subcommand;
running one of them prints one line naming the extra it needs and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command", "COMMANDS", "main"]


@dataclass(frozen=True)
class Command:
    target: str  # "package.module:function", function(argv: list[str]) -> int
    help: str
    extra: str | None = None  # the optional part of trm-serve it needs, named when that part is not installed

    def load(self) -> Callable[[list[str]], int]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: dict[str, Command] = {
    "info": Command("trm_core.cli:info_main", "print a model's config and parameter counts"),
    "convert-original": Command("trm_core.cli:convert_original_main",
                                "convert an original TRM checkpoint to safetensors"),
    "build-data": Command("training.data.cli:main", "build a training/eval dataset (sudoku | maze | arc)", "training"),
    "train": Command("training.train:main", "train a model from a config file", "training"),
    "eval": Command("training.evaluate:main", "measure a model on a dataset", "training"),
    "export": Command("training.export:main", "export a training run's EMA weights to one safetensors file; "
                      "set a model's serving recipe", "training"),
    "serve": Command("service.cli:main", "start the HTTP inference service"),
    "solve": Command("service.solve_cli:main", "solve Sudoku/Maze puzzles with the serving engine, no server"),
    "arc-solve": Command("training.adapt:main", "adapt an ARC model to unseen tasks, write the ARC Prize "
                         "submission", "training"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trm", description=__doc__.splitlines()[0],
                                     epilog="`trm COMMAND --help` shows a command's own options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help + (f" [{command.extra} extra]" if command.extra else ""),
                       add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv)  # prints usage/help and exits (2 for an unknown command, 0 for --help)
        return 2
    name, rest = argv[0], argv[1:]
    command = COMMANDS[name]
    top = command.target.split(".", 1)[0]
    try:
        run = command.load()
    except ModuleNotFoundError as e:
        if command.extra is None or e.name is None or e.name.split(".")[0] != top:
            raise
        line = (f"trm {name}: needs the {command.extra} extra, which this install lacks (no {top!r} package; "
                f"from a source checkout: pip install '.[{command.extra}]')")
        print(line, file=sys.stderr)  # noqa: T201 - the one-line failure
        return 2
    return run(rest)
