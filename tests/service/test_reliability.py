"""Hostile and careless clients: auth before the body, no filesystem paths in /metrics, strict options,
bounded body reads, and big batches that must not stall the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
import torch

from tests.service.conftest import make_settings, serve, sudoku_puzzles, wait_for
from tests.service.test_api import assert_problem
from tests.service.test_lifecycle import FOREVER, sample

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

    from service.tasks import grid as grid_tasks

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


async def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",), body_timeout_s=0.2)) as (app, _):
        messages = [{"type": "http.request", "body": b'{"puzzle":', "more_body": True}]
        sent: list[dict] = []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)  # the client announced more and went quiet
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/sudoku/solve", "raw_path": b"/v1/sudoku/solve", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
                 "client": ("127.0.0.1", 1234), "server": ("trm", 80), "root_path": ""}
        await asyncio.wait_for(app(scope, receive, send), 10)
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert body["type"] == "urn:trm:problem:body-timeout" and "TRM_BODY_TIMEOUT_S" in body["detail"]


async def test_over_the_connection_limit_is_503_with_retry_after_but_probes_pass(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku_eager",), max_connections=2)) as (app, client):
        p = {"puzzle": sudoku_puzzles(1)[0]}
        app.state.guard.open_connections = lambda: 2
        assert (await client.post("/v1/sudoku/solve", json=p)).status_code == 200
        app.state.guard.open_connections = lambda: 3
        resp = await client.post("/v1/sudoku/solve", json=p)
        body = assert_problem(resp, 503)
        assert resp.headers["retry-after"] == "1" and resp.headers["connection"] == "close"
        assert "TRM_MAX_CONNECTIONS" in body["detail"]
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'trm_requests_total{status="503",task="sudoku"} 1.0' in metrics


def _step_s(rows: int, steps: int = 20) -> float:
    """Seconds per step of the tests' tiny Sudoku model over `rows` rows, measured here and now."""
    import time

    from service.engine.core import Engine
    from service.engine.scheduler import Request
    from tests.service.conftest import make_model

    engine = Engine.for_model(make_model("sudoku"), rows, max_queue=rows)
    engine.scheduler.add_requests([Request(request_id=f"c{i}", inputs=torch.zeros(81, dtype=torch.int32),
                                           max_steps=steps, halting="fixed") for i in range(rows)])
    t0 = time.perf_counter()
    engine.run_until_idle()
    return (time.perf_counter() - t0) / steps


async def test_sigterm_drain_finishes_short_rows_answers_the_rest_503_and_never_500(checkpoints):
    """The drain `trm serve` runs on SIGTERM (service/api/server.py), here in-process: while it runs the
    app still serves, readiness is off, and every response says Connection: close.

    Deterministic by construction: every short row is in the engine before the drain starts (at most
    two running, two waiting; a loaded machine may finish some before the last one arrives, so the
    test waits for all six, not for a queue shape), and the drain's budget is derived from the step
    time measured just before: the short rows' 8 steps (2 waves of 4) get 50 times what they took,
    and at least 4 s."""
    puzzles = sudoku_puzzles(6)
    rows_budget_s = max(4.0, 50 * 8 * _step_s(4))
    reserve_s = 1.5  # DrainPlan keeps min(1.5 s, a quarter of the total) for answers and the server's close
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=4, drain_timeout_s=rows_budget_s + reserve_s,
                             prestop_s=0.3)
    async with serve(settings) as (app, client):
        worker = app.state.registry.models["sudoku"].worker
        forever = [asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": p, **FOREVER}))
                   for p in puzzles[:2]]
        await wait_for(worker, lambda s: s.num_running == 2)  # the forever rows hold the first two slots
        short = [asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": p, "halting": "fixed",
                                                                            "max_steps": 4}))
                 for p in puzzles[2:]]
        # all six are in: queued, running or (a short row on a loaded machine) already done
        await wait_for(worker, lambda s: s.num_running + s.num_waiting + s.num_finished == 6)
        drain = asyncio.create_task(app.state.drain())
        while not app.state.registry.is_draining:
            await asyncio.sleep(0.01)
        late = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0]})
        ready = await client.get("/readyz")
        for resp in (late, ready):
            assert_problem(resp, 503)
            assert resp.headers["connection"] == "close" and int(resp.headers["retry-after"]) >= 1
        assert await drain is False  # the forever rows were aborted
        assert not drain_pending(forever + short)
        assert [r.result().status_code for r in short] == [200] * 4
        for r in forever:
            assert_problem(r.result(), 503)
            assert "retry-after" in r.result().headers
        assert app.state.guard.num_in_flight == 0
    assert app.state.drained is False


def drain_pending(tasks: list[asyncio.Task]) -> list[asyncio.Task]:
    return [t for t in tasks if not t.done()]


async def test_a_request_that_cannot_meet_its_deadline_behind_the_queue_is_shed_at_once(checkpoints):
    """Calibrate (one row of 100 steps), fill the queue with 40 rows that run 100 steps each on one
    slot, then ask for 100 steps with a 2 s deadline: ~41 x 100 steps ahead cannot finish in 2 s at
    any step time above 0.5 ms, while 100 steps alone fit below 20 ms a step. 429 at once, counted as shed."""
    puzzles = sudoku_puzzles(41)
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=1, max_queue=64, request_timeout_s=2.0)
    fixed = {"halting": "fixed", "max_steps": 100}
    async with serve(settings) as (app, client):
        worker = app.state.registry.models["sudoku"].worker
        assert (await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], **fixed})).status_code == 200
        holder = asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], **FOREVER}))
        await wait_for(worker, lambda s: s.num_running == 1)
        backlog = asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzles": puzzles[1:41], **FOREVER}))
        await wait_for(worker, lambda s: s.num_waiting == 40)
        resp = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], **fixed})
        body = assert_problem(resp, 429)
        assert body["type"] == "urn:trm:problem:deadline-unmeetable" and "TRM_REQUEST_TIMEOUT_S" in body["detail"]
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        for task in (holder, backlog):
            task.cancel()
        await asyncio.gather(holder, backlog, return_exceptions=True)
        await wait_for(worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        text = (await client.get("/metrics")).text
    assert sample(text, "trm_rows_finished_total", model="sudoku", task="sudoku", reason="shed") == 1
    assert sample(text, "trm_rows_finished_total", model="sudoku", task="sudoku", reason="halted") == 1
    # every one of the 41 cancelled rows is counted, the 40 that never left the queue included
    assert sample(text, "trm_rows_finished_total", model="sudoku", task="sudoku", reason="cancelled") == 41


async def test_every_row_that_leaves_is_counted_once_by_reason(checkpoints):
    """A 12-row batch on 2 slots that hits its deadline: 2 rows time out running, 10 in the queue; the
    step reports see only the running ones, the per-request count sees all 12."""
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=2, request_timeout_s=0.5)
    async with serve(settings) as (app, client):
        worker = app.state.registry.models["sudoku"].worker
        resp = await client.post("/v1/sudoku/solve", json={"puzzles": sudoku_puzzles(12), **FOREVER})
        assert resp.status_code == 504 and resp.json()["results"] == [None] * 12
        await wait_for(worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        text = (await client.get("/metrics")).text
    assert sample(text, "trm_rows_finished_total", model="sudoku", task="sudoku", reason="timeout") == 12


@pytest.mark.parametrize("body", [b"{not json", b'{"puzzle": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000,
                                  b'{"max_steps": ' + b"9" * 5000 + b"}"],
                         ids=["malformed", "not-utf8", "too-deep", "huge-int"])
async def test_every_unparseable_body_is_400_malformed_body(checkpoints, body):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        resp = await client.post("/v1/sudoku/solve", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(resp, 400)
    assert problem["type"] == "urn:trm:problem:malformed-body" and "not parseable JSON" in problem["detail"]


@pytest.mark.parametrize("body", [{"puzzle": None}, {"puzzles": None}, {"puzzle": "x" * 81, "puzzles": None}])
async def test_null_puzzle_fields_are_refused_as_the_schema_says(checkpoints, body):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        assert_problem(await client.post("/v1/sudoku/solve", json=body), 422)


async def test_openapi_matches_behaviour_with_and_without_a_key(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        open_spec = (await client.get("/openapi.json")).json()
    async with serve(make_settings(checkpoints, names=("sudoku",), api_key=KEY)) as (_, client):
        keyed_spec = (await client.get("/openapi.json")).json()
    solve = "/v1/sudoku/solve"
    # No key configured: no bearer scheme, no 401 anywhere. With a key: both, on /v1 routes only.
    assert "securitySchemes" not in open_spec.get("components", {})
    assert all("security" not in op and "401" not in op["responses"]
               for ops in open_spec["paths"].values() for op in ops.values())
    assert keyed_spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" in keyed_spec["paths"][solve]["post"] and "401" in keyed_spec["paths"][solve]["post"]["responses"]
    assert "security" not in keyed_spec["paths"]["/healthz"]["get"]
    # Every status the solve route can answer is documented; 503 (connection limit) on every /v1 route.
    responses = open_spec["paths"][solve]["post"]["responses"]
    assert {"200", "400", "404", "408", "413", "422", "429", "503", "504"} <= set(responses)
    assert "503" in open_spec["paths"]["/v1/models"]["get"]["responses"]
    # Exactly one of puzzle / puzzles: oneOf two named object forms, each requiring its field, not
    # nullable, and refusing the other one (no additional properties).
    schemas = open_spec["components"]["schemas"]
    for name, (single, batch) in (("SudokuSolve", ("puzzle", "puzzles")),
                                  ("MazeSolve", ("puzzle", "puzzles")), ("ArcSolve", ("task", "tasks"))):
        assert schemas[f"{name}Request"]["oneOf"] == [{"$ref": f"#/components/schemas/{name}{form}"}
                                                      for form in ("One", "Batch")], name
        for form, field, other in (("One", single, batch), ("Batch", batch, single)):
            schema = schemas[f"{name}{form}"]
            assert schema["type"] == "object" and schema["required"] == [field], (name, form)
            assert schema["additionalProperties"] is False and other not in schema["properties"]
            assert "anyOf" not in schema["properties"][field] and "default" not in schema["properties"][field]


async def test_a_batch_past_its_deadline_keeps_the_answers_of_its_finished_rows(checkpoints):
    """8 rows of 2 steps on one slot, under a step clock the test controls (the model runner waits for
    the test's go before every step): the test lets the first row's 2 steps run, then none, so the
    first row finishes and the other 7 cannot, whatever the machine's speed. The 504 keeps the
    finished answer in `results` and names each missed puzzle in `errors`."""
    import threading

    puzzles = sudoku_puzzles(8)
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=1, request_timeout_s=3.0)
    async with serve(settings) as (app, client):
        served = app.state.registry.models["sudoku"]
        runner, ticks, unclocked = served.engine.runner, threading.Semaphore(0), threading.Event()
        execute = runner.execute

        def clocked(sched, **kwargs):  # the worker thread: one step per tick
            while sched.num_rows and not unclocked.is_set() and not ticks.acquire(timeout=0.05):
                pass
            return execute(sched, **kwargs)

        runner.execute = clocked
        try:
            ticks.release(2)  # the first row's two steps
            resp = await client.post("/v1/sudoku/solve", json={"puzzles": puzzles, "halting": "fixed", "max_steps": 2})
        finally:
            unclocked.set()
        await wait_for(served.worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
    assert resp.status_code == 504 and resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    results = body["results"]
    assert len(results) == 8 and results[0] is not None and results[1:] == [None] * 7
    assert results[0]["steps"] == 2 and len(results[0]["solution"]) == 9
    assert body["errors"] == [{"loc": ["body", "puzzles", i], "msg": "did not finish before the deadline"}
                              for i in range(1, 8)]
    assert "7 of 8 puzzles" in body["detail"]


async def test_405_lists_every_method_of_the_path_and_return_steps_is_a_strict_bool(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        resp = await client.request("PUT", "/v1/sudoku/solve")
        assert_problem(resp, 405)
        assert resp.headers["allow"] == "POST"
        body = assert_problem(await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0],
                                                                          "return_steps": 0}), 422)
        assert body["errors"][0]["loc"] == ["body", "return_steps"]


async def test_405_on_a_templated_path_allows_every_documented_method(checkpoints):
    async with serve(make_settings(checkpoints, names=("arc",))) as (_, client):
        resp = await client.request("PUT", "/v1/arc/tasks/some-job")
    assert_problem(resp, 405)
    assert resp.headers["allow"] == "DELETE, GET"
