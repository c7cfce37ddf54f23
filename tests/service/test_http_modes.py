"""Over HTTP: TRM_BATCHING=request really batches by request, and `verified` halting stops on a right answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import trm_core
from tests.conftest import require_shared
from tests.service.conftest import SUDOKU_CSV, make_settings, serve, sudoku_puzzles, wait_for
from trm_core.tasks import sudoku

BUNDLED = Path(trm_core.__file__).parent / "pretrained" / "sudoku.safetensors"


@pytest.mark.anyio
@pytest.mark.parametrize("batching", ["continuous", "request"])
async def test_request_batching_admits_nobody_until_the_batch_ends(checkpoints, anyio_backend, batching):
    """A long request runs; a one-step request arrives. Continuous batching lets it join at the next step
    and it finishes first; request-level batching makes it wait for the running batch to end."""
    long_p, short_p = sudoku_puzzles(2)
    # a generous deadline: 3,000 steps must never be refused by deadline admission on a loaded machine
    async with serve(make_settings(checkpoints, names=("sudoku",), batching=batching,
                                   request_timeout_s=600.0)) as (app, client):
        served = app.state.registry.models["sudoku"]
        assert served.scheduler.batching == batching
        long_task = asyncio.create_task(client.post("/v1/sudoku/solve", json={
            "puzzle": long_p, "halting": "fixed", "max_steps": 3000}))
        await wait_for(served.worker, lambda s: s.num_running == 1)
        short_task = asyncio.create_task(client.post("/v1/sudoku/solve", json={
            "puzzle": short_p, "halting": "fixed", "max_steps": 1}))
        done, _ = await asyncio.wait({long_task, short_task}, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        long_r, short_r = (await long_task).json(), (await short_task).json()
    assert (long_r["steps"], short_r["steps"]) == (3000, 1)
    assert first is (short_task if batching == "continuous" else long_task)
    if batching == "request":  # it queued for the whole of the long request's compute
        assert short_r["timings"]["queue_s"] >= long_r["timings"]["compute_s"] * 0.5


@pytest.mark.anyio
async def test_request_batching_answers_a_batch_like_continuous_batching(checkpoints, anyio_backend):
    puzzles = sudoku_puzzles(6)
    bodies = {}
    for batching in ("continuous", "request"):
        async with serve(make_settings(checkpoints, names=("sudoku",), batching=batching, max_batch=4)) as (_, c):
            resp = await c.post("/v1/sudoku/solve", json={"puzzles": puzzles, "halting": "fixed", "max_steps": 3})
            assert resp.status_code == 200
            bodies[batching] = [{k: r[k] for k in ("solution", "steps", "halt_reason", "valid")}
                                for r in resp.json()["results"]]
    assert bodies["request"] == bodies["continuous"] and len(bodies["request"]) == 6


def _easy_puzzles(n: int, blanks: int = 4) -> list[tuple[str, list[list[int]]]]:
    """Real solutions from the shared training CSV with `blanks` cells emptied: easy for the bundled model."""
    rows = SUDOKU_CSV.read_text().splitlines()[1:n + 1]
    out = []
    for i, row in enumerate(rows):
        answer = row.split(",")[2]
        cells = list(answer)
        for k in range(blanks):
            cells[(i * 7 + k * 20) % 81] = "."
        out.append(("".join(cells), sudoku.parse(answer)))
    return out


@pytest.mark.anyio
async def test_verified_halting_stops_at_the_first_step_whose_answer_passes_the_rules(checkpoints, anyio_backend):
    assert BUNDLED.is_file(), f"{BUNDLED}: the bundled Sudoku model is part of the checkout"
    require_shared(SUDOKU_CSV)
    easy = _easy_puzzles(4)
    settings = make_settings(checkpoints, names=())
    settings = settings.model_copy(update={"models": [f"sudoku={BUNDLED}"]})
    async with serve(settings) as (_, client):
        verified = await client.post("/v1/sudoku/solve", json={
            "puzzles": [p for p, _ in easy], "halting": "verified", "max_steps": 8, "return_steps": True})
        fixed = await client.post("/v1/sudoku/solve", json={
            "puzzles": [p for p, _ in easy], "halting": "fixed", "max_steps": 8})
    assert verified.status_code == 200 and fixed.status_code == 200
    for (puzzle, answer), v, f in zip(easy, verified.json()["results"], fixed.json()["results"], strict=True):
        assert v["valid"] is True and v["violations"] == [] and v["halt_reason"] == "verified"
        assert v["solution"] == answer  # a valid completion of a puzzle with few blanks is its solution
        assert 1 <= v["steps"] < 8 and f["steps"] == 8 and f["halt_reason"] == "budget"
        # it stopped at the first valid step: every earlier step's grid breaks a rule
        grids = v["trajectory"]
        assert len(grids) == v["steps"] and grids[-1] == v["solution"]
        assert all(sudoku.verify(sudoku.parse(puzzle), g) for g in grids[:-1])
