"""A Python client generated from the live /openapi.json (openapi-python-client, the usual way a Python
team consumes a REST API) has typed request models for every solve route, and they work.

The generator runs on the document the app serves; the generated package is imported and every solve
route is called with its typed request objects (one and batch form) against the app in-process.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import MAZE, make_settings, serve, small_arc_tasks, sudoku_puzzles

pytestmark = pytest.mark.anyio

PACKAGE = "trm_serve_client"
ROUTES = {"sudoku": "solve_sudoku_v1_sudoku_solve_post", "maze": "solve_maze_v1_maze_solve_post",
          "arc": "solve_arc_task_v1_arc_solve_post"}


def generate(spec: Path, out: Path) -> None:
    exe = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert exe is not None, "openapi-python-client is missing: pip install -e '.[test]'"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / "generator.yaml"
    config.write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n")
    proc = subprocess.run([exe, "generate", "--path", str(spec), "--meta", "none", "--output-path", str(out),
                           "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


async def test_generated_client_types_and_calls_every_solve_route(checkpoints, tmp_path, monkeypatch):
    arc_tasks = list(small_arc_tasks(2).values())
    async with serve(make_settings(checkpoints, names=("sudoku", "maze", "arc"))) as (app, client):
        spec = tmp_path / "openapi.json"
        spec.write_text((await client.get("/openapi.json")).text)
        await _generate_and_call(app, spec, tmp_path, monkeypatch, arc_tasks)


async def _generate_and_call(app, spec: Path, tmp_path: Path, monkeypatch, arc_tasks: list[dict]) -> None:
    import asyncio

    await asyncio.to_thread(generate, spec, tmp_path / "gen" / PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path / "gen"))
    models = importlib.import_module(f"{PACKAGE}.models")
    api = {task: importlib.import_module(f"{PACKAGE}.api.{task}.{name}") for task, name in ROUTES.items()}
    # Typed request bodies: each route takes exactly its two named forms, never Any.
    for task, prefix in (("sudoku", "SudokuSolve"), ("maze", "MazeSolve"), ("arc", "ArcSolve")):
        body = inspect.signature(api[task].asyncio_detailed).parameters["body"].annotation
        assert {form.__name__ for form in typing.get_args(body)} == {f"{prefix}One", f"{prefix}Batch"}, (task, body)

    gen_client = importlib.import_module(PACKAGE).Client(
        base_url="http://trm", httpx_args={"transport": httpx.ASGITransport(app=app)}, raise_on_unexpected_status=True)
    puzzles = sudoku_puzzles(2)
    verified = models.SudokuSolveOneHaltingType0("verified")
    calls = [
        ("sudoku", models.SudokuSolveOne(puzzle=puzzles[0], max_steps=2), models.SudokuSolveResult),
        ("sudoku", models.SudokuSolveBatch(puzzles=puzzles, max_steps=2), models.SudokuBatchResponse),
        ("sudoku", models.SudokuSolveOne(puzzle=puzzles[1], max_steps=2, halting=verified), models.SudokuSolveResult),
        ("maze", models.MazeSolveOne(puzzle=MAZE, max_steps=2), models.MazeSolveResult),
        ("maze", models.MazeSolveBatch(puzzles=[MAZE, MAZE], max_steps=2), models.MazeBatchResponse),
        ("arc", models.ArcSolveOne(task=models.ArcSolveOneTask.from_dict(arc_tasks[0]), max_steps=1),
         models.ArcSolveResult),
        ("arc", models.ArcSolveBatch(tasks=[models.ArcSolveBatchTasksItem.from_dict(t) for t in arc_tasks],
                                     max_steps=1), models.ArcBatchResponse),
    ]
    async with gen_client as c:
        for task, body, expected in calls:
            resp = await api[task].asyncio_detailed(client=c, body=body)
            assert resp.status_code == 200, (task, resp.content[:300])
            assert isinstance(resp.parsed, expected), (task, type(resp.parsed))
            results = resp.parsed.results if hasattr(resp.parsed, "results") else [resp.parsed]
            assert all(r.steps >= 1 and r.model for r in results), task
        assert [len(r.solution) for r in (await api["sudoku"].asyncio(client=c, body=calls[1][1])).results] == [9, 9]
