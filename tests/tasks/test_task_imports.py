"""trm_core.tasks must stay stdlib (+ torch) only: the service imports it without numpy."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import trm_core.tasks

ALLOWED = set(sys.stdlib_module_names) | {"torch", "trm_core"}


def test_task_modules_import_only_stdlib_and_torch():
    root = Path(trm_core.tasks.__file__).parent
    files = sorted(root.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "errors.py", "sudoku.py", "maze.py", "arc.py",
                                       "augment.py", "arc_vote.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"
