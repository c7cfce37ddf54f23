"""POST /v1/models/{name}/reload over HTTP: new weights under load with no failed request, a broken
or misshapen file refused while the old weights keep serving, the checksum in /v1/models and /metrics."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import torch

from service.engine.core import Engine
from service.engine.scheduler import Request
from tests.service.conftest import make_model, make_settings, serve, sudoku_puzzles, wait_for
from tests.service.test_api import assert_problem
from trm_core import save_checkpoint
from trm_core.checkpoint import file_sha256
from trm_core.tasks import sudoku

pytestmark = pytest.mark.anyio

META = {"task": "sudoku", "train": {"note": "random weights, for tests"}}


@pytest.fixture
def live(tmp_path, checkpoints):
    """A copy of the tests' Sudoku checkpoint at a path the test may overwrite."""
    path = tmp_path / "live.safetensors"
    shutil.copy(checkpoints["sudoku"], path)
    return path


def answer_of(model, puzzle: str, steps: int) -> list[int]:
    e = Engine.for_model(model, 1, max_queue=1)
    r = Request(request_id="r", inputs=torch.tensor(sudoku.encode(sudoku.parse(puzzle))), max_steps=steps,
                halting="fixed")
    e.scheduler.add_request(r)
    e.run_until_idle()
    return r.answer


async def test_reload_under_load_swaps_the_weights_and_no_request_fails(live, checkpoints):
    puzzles = sudoku_puzzles(8)
    # a long deadline: deadline admission must not shed any of the 8 on a slow machine
    settings = make_settings(checkpoints, names=(), models=[f"live={live}"], max_batch=4, request_timeout_s=600.0)
    new_model = make_model("sudoku", seed=7)
    async with serve(settings) as (app, client):
        before = (await client.get("/v1/models")).json()["models"][0]["sha256"]
        assert before == file_sha256(live)
        load = [asyncio.create_task(client.post("/v1/sudoku/solve", json={
            "puzzle": p, "halting": "fixed", "max_steps": 1500})) for p in puzzles]
        await wait_for(app.state.registry.models["live"].worker, lambda s: s.num_running == 4 and s.num_waiting == 4,
                       timeout_s=60)
        save_checkpoint(new_model, live, metadata=META)
        resp = await client.post("/v1/models/live/reload")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["previous_sha256"] == before and body["changed"] is True
        assert body["model"]["sha256"] == file_sha256(live) != before
        assert not all(t.done() for t in load)  # the swap happened with rows running and queued
        statuses = [r.status_code for r in await asyncio.gather(*load)]
        assert statuses == [200] * len(puzzles)  # running rows finished on old or new weights
        listed = (await client.get("/v1/models")).json()["models"][0]["sha256"]
        metrics = (await client.get("/metrics")).text
        after = (await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], "halting": "fixed",
                                                              "max_steps": 3})).json()
    assert listed == file_sha256(live) and f'sha256="{listed}"' in metrics and before not in metrics
    expected = sudoku.decode(answer_of(new_model, puzzles[0], 3))
    assert after["solution"] == expected  # served by the new weights


async def test_a_broken_or_misshapen_checkpoint_is_refused_and_the_old_model_keeps_serving(live, checkpoints):
    puzzle = sudoku_puzzles(1)[0]
    settings = make_settings(checkpoints, names=(), models=[f"live={live}"])
    async with serve(settings) as (_, client):
        before = (await client.get("/v1/models")).json()["models"][0]["sha256"]
        ref = (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed", "max_steps": 3}))
        live.write_bytes(b"not a checkpoint")
        body = assert_problem(await client.post("/v1/models/live/reload"), 422)
        assert "old weights keep serving" in body["detail"]
        save_checkpoint(make_model("sudoku", hidden_size=64), live, metadata=META)
        body = assert_problem(await client.post("/v1/models/live/reload"), 409)
        assert "hidden_size 32 -> 64" in body["detail"]
        assert_problem(await client.post("/v1/models/nope/reload"), 404)
        again = await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed", "max_steps": 3})
        assert again.status_code == 200 and again.json()["solution"] == ref.json()["solution"]
        assert (await client.get("/v1/models")).json()["models"][0]["sha256"] == before


async def test_reload_needs_the_api_key_when_one_is_set(live, checkpoints):
    settings = make_settings(checkpoints, names=(), models=[f"live={live}"], api_key="k" * 32)
    async with serve(settings) as (_, client):
        assert_problem(await client.post("/v1/models/live/reload"), 401)
        resp = await client.post("/v1/models/live/reload", headers={"Authorization": f"Bearer {'k' * 32}"})
        assert resp.status_code == 200 and resp.json()["changed"] is False


async def test_reload_of_an_adapted_arc_model_drops_the_added_rows(tmp_path, checkpoints):
    from training.adapt import install_rows

    live = tmp_path / "arc.safetensors"
    shutil.copy(checkpoints["arc"], live)
    settings = make_settings(checkpoints, names=(), models=[f"live={live}"])
    async with serve(settings) as (app, client):
        served = app.state.registry.models["live"]
        base = served.config.num_puzzle_identifiers
        install_rows(served.model, torch.randn(3, served.config.puzzle_emb_ndim))  # as an adaptation job does
        assert served.config.num_puzzle_identifiers == base + 3
        resp = await client.post("/v1/models/live/reload")
        assert resp.status_code == 200, resp.text
        assert served.config.num_puzzle_identifiers == base
        assert served.model.puzzle_emb.num_rows == base  # the extension is empty: only the file's table
