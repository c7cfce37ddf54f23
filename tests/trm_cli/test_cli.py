"""The `trm` entry point: every subcommand is reachable, and one whose part is not installed says so in one line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trm_core
from trm_cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]

# Runs `trm <command> --help` for every command with the `training` package made unimportable, as in
# an image that copies only trm_core and service.
WITHOUT_TRAINING = """
import sys, importlib.abc
class NoTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "training" or name.startswith("training."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTraining())
from trm_cli import main
try:
    code = main([sys.argv[1], "--help"])
except SystemExit as e:
    code = e.code
sys.exit(code)
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_every_subcommand_runs_its_help():
    for name in COMMANDS:
        result = _run("import sys; from trm_cli import main; sys.exit(main([sys.argv[1], '--help']))", name)
        assert result.returncode == 0, (name, result.stderr[-500:])
        assert result.stdout.strip(), name


def test_without_the_training_package_each_command_works_or_names_the_extra_in_one_line():
    for name, command in COMMANDS.items():
        result = _run(WITHOUT_TRAINING, name)
        if command.extra == "training":
            assert result.returncode == 2, (name, result.stderr)
            assert result.stderr.count("\n") == 1 and "needs the training extra" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        else:
            assert result.returncode == 0, (name, result.stderr[-500:])


def test_unknown_command_lists_the_table(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    assert all(name in err for name in COMMANDS)


def test_trm_core_names_no_layer_above_it():
    """trm_core imports nothing from training/service/trm_cli and names none of them as a module string."""
    above = ("training", "service", "trm_cli")
    for path in Path(trm_core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.split(".")[0] in above and " " not in node.value else []
            else:
                continue
            assert not [n for n in names if n.split(".")[0] in above], (path.name, names)


def test_the_image_copies_every_package_the_entry_point_needs():
    """The Dockerfile copies trm_cli (the entry point) beside trm_core and service."""
    text = (ROOT / "Dockerfile").read_text()
    for package in ("trm_cli", "trm_core", "service"):
        assert f"COPY {package} ./{package}" in text, package
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'trm = "trm_cli:main"' in pyproject and '"trm_cli*"' in pyproject
