"""Hostile and careless clients: auth before the body, no filesystem paths in /metrics, strict options,
bounded body reads, and big batches that must not stall the event loop."""

from __future__ import annotations

import hashlib

import pytest

from tests.service.conftest import make_settings, serve, sudoku_puzzles
from tests.service.test_api import assert_problem

pytestmark = pytest.mark.anyio

KEY = "k" * 32


async def test_unauthenticated_requests_get_401_before_the_body_is_read(checkpoints):
    settings = make_settings(checkpoints, names=("sudoku",), api_key=KEY, max_body_bytes=4096)
    async with serve(settings) as (_, client):
        malformed = await client.post("/v1/sudoku/solve", content=b"{not json", headers={"content-type": "application/json"})
        assert_problem(malformed, 401)
        assert malformed.headers["www-authenticate"] == "Bearer"
        huge = await client.post("/v1/sudoku/solve", content=b"x" * 1_000_000)
        assert_problem(huge, 401)
        wrong = await client.post("/v1/sudoku/solve", content=b"{not json", headers={"Authorization": "Bearer nope"})
        assert_problem(wrong, 401)
        # With the key, the same bodies reach the parser and the size limit.
        auth = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
        assert (await client.post("/v1/sudoku/solve", content=b"{not json", headers=auth)).status_code in (400, 422)
        assert_problem(await client.post("/v1/sudoku/solve", content=b"x" * 1_000_000, headers=auth), 413)


async def test_metrics_name_models_by_checksum_not_path(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        text = (await client.get("/metrics")).text
    info = [line for line in text.splitlines() if line.startswith("trm_model_info{")]
    assert len(info) == 1
    assert str(checkpoints["sudoku"].parent) not in text and "path=" not in info[0]
    digest = hashlib.sha256(checkpoints["sudoku"].read_bytes()).hexdigest()
    assert f'sha256="{digest}"' in info[0] and 'model="sudoku"' in info[0]


@pytest.mark.parametrize("value", [True, False, "3", 2.5])
async def test_max_steps_must_be_an_integer(checkpoints, value):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        resp = await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0], "max_steps": value})
        body = assert_problem(resp, 422)
        assert body["errors"][0]["loc"] == ["body", "max_steps"]


async def test_an_oversized_batch_is_refused_by_row_count_before_any_puzzle_is_parsed(checkpoints):
    """The count check is O(1): a batch over TRM_MAX_QUEUE rows is refused without parsing one puzzle
    (parsing 11,000 bad puzzles first held the event loop for a second)."""
    async with serve(make_settings(checkpoints, names=("sudoku", "maze"), max_queue=8)) as (_, client):
        for task in ("sudoku", "maze"):
            resp = await client.post(f"/v1/{task}/solve", json={"puzzles": ["bad"] * 9})
            body = assert_problem(resp, 422)
            assert body["errors"] == [{"loc": ["body", "puzzles"], "msg": body["detail"]}]
            assert "9 rows" in body["detail"] and "TRM_MAX_QUEUE" in body["detail"]
        ok_count = await client.post("/v1/sudoku/solve", json={"puzzles": ["bad"] * 8})
        assert assert_problem(ok_count, 422)["type"] == "urn:trm:problem:invalid-puzzle"


async def test_large_batches_are_validated_off_the_event_loop(checkpoints, monkeypatch):
    import threading

    from service import grid_tasks

    threads: list[str] = []
    real_parse_all = grid_tasks.parse_all

    def recording_parse_all(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_parse_all(*args, **kwargs)

    monkeypatch.setattr(grid_tasks, "parse_all", recording_parse_all)
    puzzles = sudoku_puzzles(64)
    async with serve(make_settings(checkpoints, names=("sudoku_eager",), max_queue=64)) as (_, client):
        assert (await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0]})).status_code == 200
        assert (await client.post("/v1/sudoku/solve", json={"puzzles": puzzles})).status_code == 200
    main = threading.main_thread().name
    assert threads[0] == main and threads[1] != main, threads
