"""The bundled Maze model is served by default beside Sudoku and answers real unseen mazes.

The mazes come from the generator's seed 1 test stream (the model was trained on seed 0's training
stream), so this is the card's unseen distribution. Every answer the service marks `valid` is checked
independently with the maze codec: a 4-connected S-G path through open cells that keeps every wall,
and `shortest` says whether it is a shortest one.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.settings import Settings, bundled_models
from tests.service.conftest import serve
from training.data.maze_gen import MazeGenConfig, generate_split, split_rngs
from trm_core.tasks import maze

pytestmark = pytest.mark.anyio
SIDE = 8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unseen_mazes(n: int) -> list[list[str]]:
    cfg = MazeGenConfig(height=SIDE, width=SIDE, min_moves=22)
    gen = generate_split(cfg, n, split_rngs(1)[1], desc="unseen mazes")
    return [maze.parse(m.question, height=SIDE, width=SIDE) for m in gen]


def _settings() -> Settings:
    return Settings(device="cpu", torch_threads=1, max_batch=32, warmup_steps=1)


def test_the_default_models_are_the_bundled_sudoku_and_maze():
    names = sorted(p.rsplit("/", 1)[-1] for p in bundled_models())
    assert names == ["maze.safetensors", "sudoku.safetensors"]
    assert Settings().models == bundled_models()


async def test_default_service_lists_both_and_solves_unseen_mazes():
    puzzles = unseen_mazes(24)
    async with serve(_settings()) as (_, client):
        models = (await client.get("/v1/models")).json()
        by_task = {m["task"]: m for m in models["models"]}
        assert set(by_task) >= {"sudoku", "maze"} and by_task["maze"]["name"] == "maze"

        one = await client.post("/v1/maze/solve", json={"puzzle": puzzles[0]})  # no model, no options
        assert one.status_code == 200, one.text
        assert one.json()["model"] == "maze"

        single = await client.post("/v1/maze/solve", json={"puzzles": puzzles})
        views = await client.post("/v1/maze/solve", json={"puzzles": puzzles, "views": 8, "halting": "verified"})
    rates = {}
    for name, r in (("single", single), ("views", views)):
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == len(puzzles)
        for puzzle, res in zip(puzzles, results, strict=True):
            answer = res["solution"]
            assert res["valid"] == (maze.verify(puzzle, answer) == [])
            if res["valid"]:  # a valid answer keeps every wall, S and G, and marks one S-G route
                assert all(a == "#" for p_row, a_row in zip(puzzle, answer, strict=True)
                           for p, a in zip(p_row, a_row, strict=True) if p == "#")
                assert [row.replace("o", " ") for row in answer] == puzzle
            assert res["shortest"] == maze.is_shortest(puzzle, answer)
        rates[name] = np.mean([res["shortest"] for res in results])
    # the card: 63.1% single view, 95.6% with views=8 on 1,000 unseen mazes
    assert rates["single"] >= 8 / 24 and rates["views"] >= 0.8, rates
