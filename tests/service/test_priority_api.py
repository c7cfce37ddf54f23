"""`priority` over HTTP: a bounded strict integer on every solve route, carried to the scheduler's queue."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.conftest import MAZE, make_settings, serve, sudoku_puzzles, wait_for
from tests.service.test_api import assert_problem
from tests.service.test_lifecycle import FOREVER

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("value", [-101, 101, "1", 1.5, True])
async def test_priority_outside_its_range_or_not_an_integer_is_422(checkpoints, value):
    async with serve(make_settings(checkpoints, names=("sudoku", "maze"))) as (_, client):
        for path, body in (("/v1/sudoku/solve", {"puzzle": sudoku_puzzles(1)[0]}), ("/v1/maze/solve", {"puzzle": MAZE}),
                           ("/v1/arc/solve", {"task": {"train": [], "test": []}})):
            problem = assert_problem(await client.post(path, json={**body, "priority": value}), 422)
            assert any(e["loc"][-1] == "priority" for e in problem["errors"]), problem


async def test_a_high_priority_request_overtakes_the_queue_and_is_answered_first(checkpoints):
    """One slot held by a row that never halts; three priority 5 requests and then one priority -5
    request queue behind it. The -5 request heads the queue, and once the slot frees it is answered
    before any of the earlier priority 5 requests."""
    puzzles = sudoku_puzzles(5)
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=1)
    async with serve(settings) as (app, client):
        served = app.state.registry.models["sudoku"]
        holder = asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], **FOREVER}))
        await wait_for(served.worker, lambda s: s.num_running == 1)
        order: list[int] = []

        async def solve(puzzle: str, priority: int) -> int:
            resp = await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed", "max_steps": 2,
                                                                "priority": priority})
            order.append(priority)
            return resp.status_code

        low = [asyncio.create_task(solve(p, 5)) for p in puzzles[1:4]]
        await wait_for(served.worker, lambda s: s.num_waiting == 3)
        high = asyncio.create_task(solve(puzzles[4], -5))
        await wait_for(served.worker, lambda s: s.num_waiting == 4)
        assert [r.priority for r in served.scheduler.waiting] == [-5, 5, 5, 5]
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        assert await asyncio.gather(high, *low) == [200] * 4
        assert order == [-5, 5, 5, 5]
