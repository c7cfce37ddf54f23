"""The API pieces the web page needs: per-step halting confidence with return_steps."""

from __future__ import annotations

import math

import pytest

from tests.service.conftest import make_settings, serve, small_arc_tasks, sudoku_puzzles

pytestmark = pytest.mark.anyio


async def test_trajectory_confidence_is_sigmoid_q_halt_per_step(checkpoints):
    puzzle = sudoku_puzzles(1)[0]
    async with serve(make_settings(checkpoints)) as (_, client):
        body = (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed", "max_steps": 3,
                                                              "return_steps": True})).json()
        conf = body["trajectory_confidence"]
        assert len(conf) == len(body["trajectory"]) == body["steps"] == 3
        assert all(0.0 < c < 0.05 for c in conf)  # the halting bias is -5: sigmoid(q_halt) stays near 0.007
        assert conf[-1] == body["confidence"]  # the halting step's confidence is the last one
        eager = (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "model": "sudoku_eager",
                                                               "return_steps": True})).json()
        assert eager["steps"] == 1 and len(eager["trajectory_confidence"]) == 1
        assert eager["trajectory_confidence"][0] > 0.95 and math.isclose(eager["trajectory_confidence"][0],
                                                                         eager["confidence"])
        plain = (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "max_steps": 2})).json()
        assert "trajectory" not in plain and "trajectory_confidence" not in plain


async def test_arc_trajectory_confidence_per_test_input(checkpoints):
    task = next(iter(small_arc_tasks(1).values()))
    async with serve(make_settings(checkpoints)) as (_, client):
        body = (await client.post("/v1/arc/solve", json={"task": task, "max_steps": 2, "return_steps": True})).json()
        assert [len(c) for c in body["trajectory_confidence"]] == [len(t) for t in body["trajectory"]]
        assert len(body["trajectory_confidence"]) == len(task["test"])
