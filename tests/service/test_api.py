"""The HTTP contract end to end: real app, real lifespan, real tiny checkpoints, in-process client."""

from __future__ import annotations

import json

import pytest

from service.api.app import create_app
from tests.service.conftest import MAZE, make_settings, serve, small_arc_tasks, sudoku_puzzles
from trm_core.tasks import maze, sudoku

pytestmark = pytest.mark.anyio

RESULT_KEYS = {"solution", "valid", "violations", "steps", "halt_reason", "confidence", "timings", "model",
               "views", "view", "row_steps"}


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"} and body["status"] == status
    assert body["detail"] and body["type"].startswith("urn:trm:problem:")
    return body


async def test_sudoku_single_and_batch_in_request_order(checkpoints):
    puzzles = sudoku_puzzles(3)
    async with serve(make_settings(checkpoints)) as (_, client):
        singles = []
        for p in puzzles:
            resp = await client.post("/v1/sudoku/solve", json={"puzzle": p, "halting": "fixed", "max_steps": 3})
            assert resp.status_code == 200, resp.text
            singles.append(resp.json())
        as_lists = [sudoku.parse(p) for p in puzzles]
        resp = await client.post("/v1/sudoku/solve", json={"puzzles": [puzzles[0], as_lists[1], puzzles[2]],
                                                           "halting": "fixed", "max_steps": 3})
        assert resp.status_code == 200, resp.text
        batch = resp.json()["results"]
    assert len(batch) == 3
    for one, grid, got in zip(singles, as_lists, batch, strict=True):
        assert set(one) == RESULT_KEYS and "trajectory" not in one
        assert got["solution"] == one["solution"] and got["steps"] == one["steps"] == 3
        assert one["halt_reason"] == "budget" and one["model"] == "sudoku"  # the first sudoku model is the default
        assert one["violations"] == sudoku.verify(grid, one["solution"]) and one["valid"] == (not one["violations"])
        assert 0.0 < one["confidence"] < 0.5  # halting head biased to "not done"
        t = one["timings"]
        assert 0 <= t["queue_s"] <= t["total_s"] and 0 <= t["compute_s"] <= t["total_s"]
    assert singles[0]["solution"] != singles[1]["solution"]  # different puzzles: the order check means something


async def test_halting_options_and_trajectory(checkpoints):
    p = sudoku_puzzles(1)[0]
    async with serve(make_settings(checkpoints)) as (_, client):
        eager = (await client.post("/v1/sudoku/solve", json={"puzzle": p, "model": "sudoku_eager"})).json()
        assert (eager["steps"], eager["halt_reason"], eager["model"]) == (1, "learned", "sudoku_eager")
        assert eager["confidence"] > 0.5
        default = (await client.post("/v1/sudoku/solve", json={"puzzle": p})).json()
        assert (default["steps"], default["halt_reason"]) == (4, "budget")  # the model's halt_max_steps
        verified = (await client.post("/v1/sudoku/solve", json={"puzzle": p, "halting": "verified",
                                                                 "max_steps": 5, "return_steps": True})).json()
        # An untrained model never produces a valid grid, so verified halting runs to the budget.
        assert (verified["steps"], verified["halt_reason"], verified["valid"]) == (5, "budget", False)
        assert len(verified["trajectory"]) == 5 and verified["trajectory"][-1] == verified["solution"]


async def test_maze_single_and_batch(checkpoints):
    async with serve(make_settings(checkpoints)) as (_, client):
        one = await client.post("/v1/maze/solve", json={"puzzle": MAZE, "max_steps": 2, "return_steps": True})
        assert one.status_code == 200, one.text
        body = one.json()
        assert set(body) == RESULT_KEYS | {"trajectory", "trajectory_confidence", "shortest"} and len(body["trajectory"]) == 2
        assert len(body["solution"]) == 10 and all(len(row) == 10 for row in body["solution"])
        assert body["violations"] == maze.verify(MAZE, body["solution"])
        flipped = [row[::-1] for row in MAZE]
        batch = await client.post("/v1/maze/solve", json={"puzzles": [MAZE, "\n".join(flipped)], "max_steps": 2})
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert results[0]["solution"] == body["solution"] and len(results) == 2


async def test_arc_single_and_batch_vote_over_versions(checkpoints):
    tasks = list(small_arc_tasks(2).values())
    async with serve(make_settings(checkpoints)) as (_, client):
        resp = await client.post("/v1/arc/solve", json={"task": tasks[0], "max_steps": 2, "return_steps": True})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        num_tests = len(tasks[0]["test"])
        assert len(body["attempts"]) == num_tests and all(len(a) == 2 for a in body["attempts"])
        assert body["num_versions"] == 3 and body["steps"] == 2 and body["halt_reason"] == "budget"
        for votes in body["votes"]:
            assert votes[0] >= votes[1] >= 1 and (votes[0] + votes[1] <= 3 or votes[0] == votes[1] == 3)
        assert len(body["trajectory"]) == num_tests and len(body["trajectory"][0]) == 2
        batch = await client.post("/v1/arc/solve", json={"tasks": tasks, "max_steps": 2})
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert len(results) == 2 and results[0]["attempts"] == body["attempts"]
        assert len(results[1]["attempts"]) == len(tasks[1]["test"])


async def test_arc_runs_at_most_the_configured_versions(checkpoints):
    task = next(iter(small_arc_tasks(1).values()))
    async with serve(make_settings(checkpoints, names=("arc",), arc_max_versions=2)) as (app, client):
        body = (await client.post("/v1/arc/solve", json={"task": task, "max_steps": 1})).json()
        assert body["num_versions"] == 2 and all(sum(v) <= 2 or v[0] == v[1] for v in body["votes"])
        stats = app.state.registry.models["arc"].scheduler.stats()
        assert stats.num_finished == 2 * len(task["test"])  # rows run: versions x test inputs


async def test_arc_unknown_task_and_verified_halting_are_refused(checkpoints):
    task = json.loads(json.dumps(next(iter(small_arc_tasks(1).values()))))
    task["train"][0]["output"][0][0] = (task["train"][0]["output"][0][0] + 1) % 10  # different content
    async with serve(make_settings(checkpoints)) as (_, client):
        body = assert_problem(await client.post("/v1/arc/solve", json={"tasks": [task]}), 422)
        assert body["errors"][0]["loc"] == ["body", "tasks", 0] and "not trained on this task" in body["detail"]
        good = next(iter(small_arc_tasks(1).values()))
        body = assert_problem(await client.post("/v1/arc/solve", json={"task": good, "halting": "verified"}), 422)
        assert body["errors"][0]["loc"] == ["body", "halting"]


async def test_bad_puzzles_are_422_naming_the_cell(checkpoints):
    good = sudoku_puzzles(2)
    bad = good[1][:40] + "x" + good[1][41:]
    async with serve(make_settings(checkpoints)) as (_, client):
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzles": [good[0], bad]}), 422)
        assert body["errors"] == [{"loc": ["body", "puzzles", 1, 40],
                                   "msg": "character 40 (row 4, column 4): 'x' is not a digit 1-9 or a blank '.'/'0'"}]
        grid = sudoku.parse(good[0])
        grid[2][7] = 12
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": grid}), 422)
        assert body["errors"][0]["loc"] == ["body", "puzzle", 2, 7] and "row 2, column 7" in body["detail"]
        conflict = sudoku.parse(good[0])
        conflict[0] = [1, 1] + conflict[0][2:]
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": conflict}), 422)
        assert "digit 1 appears" in body["detail"]
        walled = [row.replace("G", "#") for row in MAZE]
        body = assert_problem(await client.post("/v1/maze/solve", json={"puzzle": walled}), 422)
        assert "no goal" in body["detail"]
        body = assert_problem(await client.post("/v1/maze/solve", json={"puzzle": MAZE[:9]}), 422)
        assert "9 rows; expected 10" in body["detail"]
        # The form of the request itself: both forms, unknown fields, bad options, broken JSON.
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": good[0], "puzzles": good}), 422)
        assert "not both" in body["detail"]
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": good[0], "speed": 3}), 422)
        assert body["errors"][0]["loc"] == ["body", "speed"]
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": good[0], "max_steps": 0}), 422)
        assert body["errors"][0]["loc"] == ["body", "max_steps"]
        body = assert_problem(await client.post("/v1/sudoku/solve",
                                                json={"puzzle": good[0], "max_steps": 100_001}), 422)
        assert "limit of 100000" in body["detail"]
        assert_problem(await client.post("/v1/sudoku/solve", content=b"{not json",
                                         headers={"content-type": "application/json"}), 400)  # not JSON at all
        assert_problem(await client.post("/v1/sudoku/solve", json={"puzzles": []}), 422)


async def test_unknown_model_is_404(checkpoints):
    p = sudoku_puzzles(1)[0]
    async with serve(make_settings(checkpoints, names=("sudoku", "maze"))) as (_, client):
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": p, "model": "nope"}), 404)
        assert body["errors"][0]["loc"] == ["body", "model"] and "models for sudoku: sudoku" in body["detail"]
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": p, "model": "maze"}), 404)
        assert "does not serve sudoku" in body["detail"]
        body = assert_problem(await client.post("/v1/arc/solve", json={"task": {}}), 404)
        assert "no model serves arc" in body["detail"]
        assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_api_key_guards_v1_only(checkpoints):
    key = "k" * 32
    p = sudoku_puzzles(1)[0]
    async with serve(make_settings(checkpoints, names=("sudoku",), api_key=key)) as (_, client):
        resp = await client.post("/v1/sudoku/solve", json={"puzzle": p})
        assert_problem(resp, 401)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": p},
                                         headers={"Authorization": "Bearer " + "x" * 32}), 401)
        assert_problem(await client.get("/v1/models"), 401)
        ok = await client.post("/v1/sudoku/solve", json={"puzzle": p}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


async def test_body_limit_is_413_with_and_without_content_length(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",), max_body_bytes=2048)) as (_, client):
        big = {"puzzles": sudoku_puzzles(40)}
        body = assert_problem(await client.post("/v1/sudoku/solve", json=big), 413)
        assert "2048 bytes" in body["detail"]

        async def chunks():  # a streamed body: no Content-Length header at all
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 500):
                yield payload[i:i + 500]

        resp = await client.post("/v1/sudoku/solve", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in resp.request.headers
        assert_problem(resp, 413)
        small = await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0]})
        assert small.status_code == 200


async def test_not_ready_is_503(checkpoints):
    app = create_app(make_settings(checkpoints, names=("sudoku",)))  # lifespan not started: nothing loaded
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trm") as client:
        assert_problem(await client.get("/readyz"), 503)
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0]}), 503)
        assert "loading" in body["detail"]
        assert (await client.get("/healthz")).status_code == 200


async def test_models_listing_and_openapi(checkpoints):
    async with serve(make_settings(checkpoints)) as (_, client):
        models = (await client.get("/v1/models")).json()["models"]
        by_name = {m["name"]: m for m in models}
        assert set(by_name) == {"sudoku", "sudoku_eager", "maze", "arc"}
        assert by_name["sudoku"]["is_default"] and not by_name["sudoku_eager"]["is_default"]
        assert by_name["maze"]["grid"] == [10, 10] and by_name["arc"]["num_arc_tasks"] == 2
        assert by_name["sudoku"]["train"] == {"note": "random weights, for tests"}
        spec = (await client.get("/openapi.json")).json()
        assert {"/v1/sudoku/solve", "/v1/maze/solve", "/v1/arc/solve", "/v1/models"} <= set(spec["paths"])
        assert "422" in spec["paths"]["/v1/sudoku/solve"]["post"]["responses"]
        assert (await client.get("/docs")).status_code == 200


async def test_cors_is_off_by_default_and_on_for_listed_origins(checkpoints):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        resp = await client.options("/v1/sudoku/solve", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    async with serve(make_settings(checkpoints, names=("sudoku",), cors_origins=["https://app.example"])) as (_, c):
        resp = await c.options("/v1/sudoku/solve", headers=preflight)
        assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "https://app.example"
        other = await c.options("/v1/sudoku/solve", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
