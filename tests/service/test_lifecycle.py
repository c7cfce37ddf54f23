"""Backpressure, deadlines, cancellation, graceful drain, and /metrics moving under load.

Requests that must stay in flight run the never-halting tiny model with `halting=fixed` and a huge
step budget; the tests synchronise on the worker's condition (`wait_until`), never on sleeps.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from service.api.app import create_app
from tests.service.conftest import make_settings, serve, sudoku_puzzles, wait_for

pytestmark = pytest.mark.anyio

FOREVER = {"halting": "fixed", "max_steps": 100_000}  # ~a minute of steps: only ends when cancelled


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    return 0.0


async def test_queue_full_is_429_with_retry_after_and_cancel_frees_slots(checkpoints):
    puzzles = sudoku_puzzles(3)
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=1, max_queue=1)
    async with serve(settings) as (app, client):
        worker = app.state.registry.models["sudoku"].worker
        holder = asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0], **FOREVER}))
        await wait_for(worker, lambda s: s.num_running == 1)
        queued = asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": puzzles[1], **FOREVER}))
        await wait_for(worker, lambda s: s.num_waiting == 1)
        resp = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[2]})
        assert resp.status_code == 429 and resp.headers["content-type"] == "application/problem+json"
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert "queue full: 1 of 1 rows waiting" in resp.json()["detail"]

        metrics = (await client.get("/metrics")).text  # gauges are read at scrape time
        assert sample(metrics, "trm_queue_depth", model="sudoku") == 1
        assert sample(metrics, "trm_active_slots", model="sudoku") == 1
        assert sample(metrics, "trm_slots", model="sudoku") == 1

        # The client goes away (its task is cancelled): its slot is freed before the next step and
        # the queued request takes it.
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        await wait_for(worker, lambda s: s.num_running == 1 and s.num_waiting == 0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await wait_for(worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        ok = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[2], "max_steps": 2})
        assert ok.status_code == 200 and ok.json()["steps"] == 2
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "trm_rows_evicted_total", model="sudoku", task="sudoku", reason="cancelled") == 2
        assert sample(metrics, "trm_requests_total", task="sudoku", status="429") == 1


async def test_client_disconnect_frees_the_slot(checkpoints):
    """A server (uvicorn) reports a client that went away as http.disconnect on `receive`."""
    import json

    async with serve(make_settings(checkpoints, names=("sudoku",), max_batch=1)) as (app, _):
        worker = app.state.registry.models["sudoku"].worker
        body = json.dumps({"puzzle": sudoku_puzzles(1)[0], **FOREVER}).encode()
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/sudoku/solve", "raw_path": b"/v1/sudoku/solve", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1234), "server": ("trm", 80), "root_path": ""}
        call = asyncio.create_task(app(scope, receive, send))
        await wait_for(worker, lambda s: s.num_running == 1)
        gone.set()
        await call
        await wait_for(worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        assert sent[0]["status"] == 499
        metrics = app.state.metrics.render().decode()
        assert sample(metrics, "trm_rows_evicted_total", model="sudoku", task="sudoku", reason="cancelled") == 1


async def test_deadline_is_504_and_frees_the_slot(checkpoints):
    settings = make_settings(checkpoints, names=("sudoku",), max_batch=1, request_timeout_s=0.3)
    async with serve(settings) as (app, client):
        worker = app.state.registry.models["sudoku"].worker
        resp = await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0], **FOREVER})
        assert resp.status_code == 504 and resp.headers["content-type"] == "application/problem+json"
        assert "0.3s" in resp.json()["detail"]
        await wait_for(worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "trm_rows_evicted_total", model="sudoku", task="sudoku", reason="timeout") == 1
        assert sample(metrics, "trm_requests_total", task="sudoku", status="504") == 1


async def test_shutdown_drains_in_flight_requests(checkpoints):
    puzzles = sudoku_puzzles(4)
    app = create_app(make_settings(checkpoints, names=("sudoku",), max_batch=2))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    registry = app.state.registry
    worker = registry.models["sudoku"].worker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trm") as client:
        # 4 requests of 100 steps on 2 slots: two run, two wait, when shutdown begins.
        tasks = [asyncio.create_task(client.post("/v1/sudoku/solve", json={"puzzle": p, "halting": "fixed",
                                                                            "max_steps": 100}))
                 for p in puzzles]
        await wait_for(worker, lambda s: s.num_running == 2 and s.num_waiting == 2)
        shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
        while not registry.is_draining:  # drain starts on a thread; yield until it has begun
            await asyncio.sleep(0)
        refused = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[0]})
        assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
        assert (await client.get("/readyz")).status_code == 503
        results = await asyncio.gather(*tasks)
        await shutdown
    assert [r.status_code for r in results] == [200] * 4
    assert all(r.json()["steps"] == 100 for r in results)
    assert not worker.is_alive


async def test_metrics_expose_every_metric_and_move_under_load(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku", "sudoku_eager"))) as (app, client):
        before = (await client.get("/metrics")).text
        puzzles = sudoku_puzzles(6)
        resps = await asyncio.gather(
            *(client.post("/v1/sudoku/solve", json={"puzzle": p, "halting": "fixed", "max_steps": 3}) for p in puzzles),
            client.post("/v1/sudoku/solve", json={"puzzles": puzzles[:2], "model": "sudoku_eager"}),
            client.post("/v1/sudoku/solve", json={"puzzle": "bad"}),
        )
        assert [r.status_code for r in resps] == [200] * 7 + [422]
        # A response can leave before its worker has recorded the step's metrics; wait for the
        # workers to publish their last step.
        for served in app.state.registry.models.values():
            await wait_for(served.worker, lambda s: s.num_running == 0 and s.num_waiting == 0)
        after = (await client.get("/metrics")).text
    m = dict(model="sudoku", task="sudoku")
    assert sample(before, "trm_requests_total", task="sudoku", status="200") == 0
    assert sample(after, "trm_requests_total", task="sudoku", status="200") == 7
    assert sample(after, "trm_requests_total", task="sudoku", status="422") == 1
    assert sample(after, "trm_request_duration_seconds_count", task="sudoku") == 8
    assert sample(after, "trm_queue_wait_seconds_count", **m) == 6
    assert sample(after, "trm_request_act_steps_count", **m) == 6
    assert sample(after, "trm_request_act_steps_sum", **m) == 18
    assert sample(after, "trm_request_act_steps_bucket", le="3.0", **m) == 6
    assert sample(after, "trm_request_act_steps_bucket", le="2.0", **m) == 0
    assert sample(after, "trm_halts_total", reason="budget", **m) == 6
    assert sample(after, "trm_halts_total", model="sudoku_eager", task="sudoku", reason="learned") == 2
    assert sample(after, "trm_answers_total", valid="false", **m) == 6
    assert sample(after, "trm_slot_occupancy_ratio_count", model="sudoku") >= 3  # 6 rows x 3 steps on 4 slots
    assert sample(after, "trm_slot_occupancy_ratio_sum", model="sudoku") > sample(before,
                                                                                 "trm_slot_occupancy_ratio_sum",
                                                                                 model="sudoku")
    assert sample(after, "trm_step_duration_seconds_count", model="sudoku") >= 3
    info = [line for line in after.splitlines() if line.startswith("trm_model_info{")]
    assert len(info) == 2 and all(line.endswith(" 1.0") for line in info)
    assert any('model="sudoku"' in line and 'task="sudoku"' in line and 'is_default="true"' in line for line in info)
    for name in ("trm_queue_depth", "trm_active_slots", "trm_slots", "trm_ready"):
        assert re.search(rf"^{name}(\{{|\s)", after, re.M), name
    assert sample(after, "trm_ready") == 1
    assert "trm_device_memory_bytes" not in after  # CUDA only
