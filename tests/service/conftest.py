"""Service test factories: tiny real checkpoints for the three tasks, settings, an in-process server.

Models are real TRMs (hidden 32) saved with `save_checkpoint`; Maze and ARC use a 10x10 grid so a
step takes about a millisecond. Halting is controlled through the halting head's bias: -5 never
halts by the learned policy (rows run to their budget), +5 halts at step 1.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import torch

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import DATA, require_shared, tiny_model
from trm_core import TRM, save_checkpoint
from trm_core.tasks import arc
from trm_core.tasks.augment import ArcAug

SUDOKU_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"
ARC_DIR = DATA / "arc" / "arc-agi-1" / "training"
ARC_CANVAS = 10
NUM_ARC_VERSIONS = 3

# A hand-made 10x10 maze (the shared data has no mazes): start top left, goal bottom right.
MAZE = [
    "##########",
    "#S   #   #",
    "# ## # # #",
    "#  #   # #",
    "## ##### #",
    "#      # #",
    "# #### # #",
    "#    #   #",
    "#### #  G#",
    "##########",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_trm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read TRM_* variables; the developer's shell must not change what tests see."""
    import os

    for key in list(os.environ):
        if key.startswith("TRM_"):
            monkeypatch.delenv(key)


def sudoku_puzzles(n: int) -> list[str]:
    rows = require_shared(SUDOKU_CSV).read_text().splitlines()[1:n + 1]
    return [row.split(",")[1] for row in rows]


def small_arc_tasks(n: int) -> dict[str, dict]:
    """The first n ARC-AGI-1 training tasks whose grids all fit the test canvas (<= 9x9, EOS included)."""
    require_shared(ARC_DIR)
    found: dict[str, dict] = {}
    for path in sorted(ARC_DIR.glob("*.json")):
        task = json.loads(path.read_text())
        grids = [g for pair in task["train"] + task["test"] for g in pair.values()]
        if all(len(g) < ARC_CANVAS and len(g[0]) < ARC_CANVAS for g in grids) and len(task["test"]) <= 2:
            found[path.stem] = task
            if len(found) == n:
                break
    return found


def make_model(task: str, /, *, halt_bias: float = -5.0, seed: int = 0, **overrides) -> TRM:
    """A tiny real TRM shaped for `task`; `overrides` go to TRMConfig (task=... may contradict the shape)."""
    shape = {
        "sudoku": {},
        "maze": dict(seq_len=100, vocab_size=6, grid_height=10, grid_width=10),
        "arc": dict(seq_len=ARC_CANVAS * ARC_CANVAS, vocab_size=12, grid_height=ARC_CANVAS, grid_width=ARC_CANVAS,
                    num_puzzle_identifiers=1 + 2 * NUM_ARC_VERSIONS),
    }[task]
    model = tiny_model(seed=seed, L_layers=1, H_cycles=1, L_cycles=1, **{"task": task, **shape, **overrides})
    with torch.no_grad():
        model.q_head.bias.fill_(halt_bias)
    return model


def arc_table(tasks: dict[str, dict]) -> dict[str, list[dict]]:
    """The `arc_tasks` metadata for `tasks`: identity plus random versions, puzzle ids from 1."""
    rng = random.Random(0)
    table, pid = {}, 1
    for task in tasks.values():
        versions = [ArcAug()] + [ArcAug.random(rng) for _ in range(NUM_ARC_VERSIONS - 1)]
        # the ARC builder's format (training/data/build_arc.py): perm as a string of 10 digits
        table[arc.task_fingerprint(task)] = [{"puzzle_id": pid + i, "k": v.k, "perm": "".join(map(str, v.perm))}
                                             for i, v in enumerate(versions)]
        pid += len(versions)
    return table


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> checkpoint path: sudoku (never halts early), sudoku_eager (halts at step 1), maze, arc."""
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, task, bias in (("sudoku", "sudoku", -5.0), ("sudoku_eager", "sudoku", 5.0), ("maze", "maze", -5.0),
                             ("arc", "arc", -5.0)):
        meta = {"task": task, "train": {"note": "random weights, for tests"}}
        if task == "arc":
            meta["arc_tasks"] = arc_table(small_arc_tasks(2))
        paths[name] = root / f"{name}.safetensors"
        save_checkpoint(make_model(task, halt_bias=bias), paths[name], metadata=meta)
    return paths


def make_settings(checkpoints: dict[str, Path], names: tuple[str, ...] = ("sudoku", "sudoku_eager", "maze", "arc"),
                  **overrides) -> Settings:
    base = dict(models=[f"{n}={checkpoints[n]}" for n in names], device="cpu", max_batch=4, max_queue=32,
                max_wait_s=0.0, warmup_steps=1, request_timeout_s=30.0, drain_timeout_s=30.0,
                max_steps_limit=100_000)
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trm") as client:
            yield app, client


async def wait_for(worker, predicate, timeout_s: float = 60.0) -> None:
    """Block (off the loop) until the worker's stats satisfy `predicate`; fail the test otherwise."""
    assert await asyncio.to_thread(worker.wait_until, predicate, timeout_s), "condition not reached in time"
