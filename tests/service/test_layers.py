"""The service's rooms import only downwards; this test reads every module's imports (ast) and fails
on one that goes up.

The rule, lowest first (a module may import its own rank and any lower one, never a higher one):

    0  service.settings, service.traffic   configuration and the live-traffic window: plain values
    1  service.engine                      scheduler, runner, stepper, engine, loop thread, estimate
    2  service.metrics                     Prometheus metrics (reads the engine's step reports)
    3  service.registry                    checkpoints -> checked models with engines and threads
    4  service.tasks                       grids in, results out: no HTTP types, no web framework
    5  service.api, service.app            FastAPI app, schemas, routes, problem+json, middleware
    6  service.cli, service.solve_cli, service.__main__   the command lines

and below rank 5 nothing imports fastapi, starlette or uvicorn. Imports inside functions and under
`if TYPE_CHECKING:` count too; the one annotation-only exception is listed in ANNOTATION_ONLY with
its reason (docs/ARCHITECTURE.md, "Layering").
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"

RANKS = {
    "service.settings": 0, "service.traffic": 0,
    "service.engine": 1,
    "service.metrics": 2,
    "service.registry": 3,
    "service.tasks": 4,
    "service.api": 5, "service.app": 5,
    "service.cli": 6, "service.solve_cli": 6, "service.__main__": 6,
}
WEB = ("fastapi", "starlette", "uvicorn")
WEB_RANK = RANKS["service.api"]

# (importer, imported) -> why it is allowed; each must sit under `if TYPE_CHECKING:`.
ANNOTATION_ONLY = {
    ("service.engine.estimate", "service.registry"):
        "check_deadline / queue_retry_after_s annotate their argument as ServedModel and read only its "
        "scheduler, name, task and config (duck typing); the engine never loads the registry",
}


def module_name(path: Path, root: Path = SERVICE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int | None:
    """The rank of the longest RANKS prefix of `module`; None for modules outside the rule."""
    for prefix in sorted(RANKS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return RANKS[prefix]
    return None


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, root: Path = SERVICE) -> list[tuple[str, int, bool]]:
    """(imported module, line, under TYPE_CHECKING) for every import statement of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    checking = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, node.lineno in checking) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, node.lineno in checking))
            # `from service.api.routes import arc` imports the submodule service.api.routes.arc
            for alias in node.names:
                sub = root.parent.joinpath(*node.module.split("."), alias.name)
                if sub.is_dir() or sub.with_suffix(".py").is_file():
                    found.append((f"{node.module}.{alias.name}", node.lineno, node.lineno in checking))
    return found


def violations(root: Path = SERVICE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        own = rank(importer)
        if own is None:
            continue  # service/__init__.py: the package docstring only
        for imported, line, is_annotation in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if own < WEB_RANK and imported.split(".")[0] in WEB:
                problems.append(f"{where}: {importer} (rank {own}) imports {imported}: web types stay in service.api")
            theirs = rank(imported)
            if theirs is None or theirs <= own:
                continue
            allowed = next((why for (a, b), why in ANNOTATION_ONLY.items()
                            if importer == a and (imported == b or imported.startswith(b + "."))), None)
            if allowed is not None and is_annotation:
                continue
            problems.append(f"{where}: {importer} (rank {own}) imports {imported} (rank {theirs}): upward")
    return problems


def test_service_imports_only_downwards():
    assert violations() == []


def test_every_service_module_has_a_rank():
    unranked = [module_name(p) for p in SERVICE.rglob("*.py") if rank(module_name(p)) is None]
    assert unranked == ["service"], "give each new module a rank in RANKS (and docs/ARCHITECTURE.md)"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / "service" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "service" / name).write_text(text)
    return root / "service"


def test_the_checker_catches_upward_imports(tmp_path):
    """The rule must be able to fail: a task module that imports the HTTP schemas or starlette, an engine
    module that imports the registry at run time, or under TYPE_CHECKING where no exception says why."""
    annotation = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service.registry import ServedModel\n"
    found = violations(_tree(tmp_path / "a", {
        "tasks/x.py": "from service.api.schemas import SolveOptions\nimport starlette.requests\n",
        "engine/estimate.py": "from service.registry import ServedModel\n",
        "engine/core.py": annotation,
        "api/routes/arc.py": "from service.tasks import arc\n",
        "tasks/arc.py": "from service.api.routes import arc\n",
    }))
    assert sorted(p.split(": ")[0] for p in found) == [
        "service/engine/core.py:3", "service/engine/estimate.py:1", "service/tasks/arc.py:1",
        "service/tasks/arc.py:1", "service/tasks/x.py:1", "service/tasks/x.py:2"], found
    assert any("imports starlette.requests: web types stay in service.api" in p for p in found)
    assert violations(_tree(tmp_path / "b", {"engine/estimate.py": annotation})) == []
