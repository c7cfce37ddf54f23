"""What the web page needs from the service: per-step confidence, GET /v1/stats, the page's own files."""

from __future__ import annotations

import csv
import gzip
import json
import math
import re

import pytest

from service.api.routes.page import STATIC_DIR
from service.traffic import RecentRequests
from tests.conftest import DATA, require_shared
from tests.service.conftest import make_settings, serve, small_arc_tasks, sudoku_puzzles
from trm_core.tasks import sudoku


@pytest.mark.anyio
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


@pytest.mark.anyio
async def test_arc_trajectory_confidence_per_test_input(checkpoints):
    task = next(iter(small_arc_tasks(1).values()))
    async with serve(make_settings(checkpoints)) as (_, client):
        body = (await client.post("/v1/arc/solve", json={"task": task, "max_steps": 2, "return_steps": True})).json()
        assert [len(c) for c in body["trajectory_confidence"]] == [len(t) for t in body["trajectory"]]
        assert len(body["trajectory_confidence"]) == len(task["test"])


# ---- GET /v1/stats ------------------------------------------------------------------------------
def test_recent_requests_window_rate_and_quantiles():
    recent = RecentRequests(window_s=10.0)
    t0 = recent.started
    for i in range(1, 11):  # 10 successes of 0.1 .. 1.0 s, one per second
        recent.add(200, i / 10, now=t0 + i)
    recent.add(422, 0.001, now=t0 + 10)
    s = recent.snapshot(now=t0 + 10)
    assert (s.requests, s.errors) == (11, 1)
    assert s.requests_per_s == pytest.approx(11 / 10)
    assert (s.latency_p50_s, s.latency_p90_s, s.latency_p99_s) == (0.5, 0.9, 1.0)  # nearest rank, 2xx only
    later = recent.snapshot(now=t0 + 15.5)  # items finished before t0 + 5.5 have left the window
    assert later.requests == 6 and later.latency_p50_s == 0.8
    assert recent.snapshot(now=t0 + 100).latency_p50_s is None


def test_recent_requests_bounded_memory_reports_the_span_it_kept():
    recent = RecentRequests(window_s=60.0, max_items=4)
    t0 = recent.started
    for i in range(8):
        recent.add(200, 0.01, now=t0 + 1 + i * 0.5)
    s = recent.snapshot(now=t0 + 5)
    assert s.requests == 4 and s.requests_per_s == pytest.approx(4 / (5 - 3.0))


@pytest.mark.anyio
async def test_stats_endpoint_counts_solves_and_reads_the_schedulers(checkpoints):
    puzzle = sudoku_puzzles(1)[0]
    async with serve(make_settings(checkpoints, names=("sudoku", "maze"))) as (app, client):
        for _ in range(3):
            assert (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "max_steps": 2})).status_code == 200
        assert (await client.post("/v1/sudoku/solve", json={"puzzle": puzzle[:80]})).status_code == 422
        body = (await client.get("/v1/stats")).json()
        assert set(body["models"]) == {"sudoku", "maze"} and body["models"]["maze"]["task"] == "maze"
        assert body["slots"] == 8 and body["queue_depth"] == 0 and body["active_slots"] == 0
        assert body["models"]["sudoku"]["steps"] >= 2 and body["models"]["maze"]["steps"] == 0
        recent = body["recent"]
        assert (recent["requests"], recent["errors"]) == (4, 1) and recent["requests_per_s"] > 0
        assert 0 < recent["latency_p50_s"] <= recent["latency_p90_s"] <= recent["latency_p99_s"]
        assert "/v1/stats" in app.openapi()["paths"]  # documented in OpenAPI


@pytest.mark.anyio
async def test_stats_needs_the_api_key_when_one_is_set(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",), api_key="a-long-test-key-0123456789")) as (_, client):
        assert (await client.get("/v1/stats")).status_code == 401
        assert (await client.get("/v1/stats", headers={"Authorization": "Bearer a-long-test-key-0123456789"})).status_code == 200
        assert (await client.get("/")).status_code == 200  # the page itself needs no key


# ---- the page -----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_page_and_its_files_come_from_the_service(checkpoints):
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (app, client):
        index = await client.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        refs = re.findall(r'(?:src|href)="([^"]+)"', index.text)
        local = [r for r in refs if r.startswith("/static/")]
        assert {"/static/app.js", "/static/style.css"} <= set(local)
        # no CDN: everything the page loads is the service's own (links to /docs etc. are same-origin)
        assert all(r.startswith("/") or r.startswith("data:") for r in refs), refs
        for ref in local:
            resp = await client.get(ref)
            assert resp.status_code == 200 and resp.content, ref
        js = (await client.get("/static/app.js")).text
        assert "http://" not in js and "https://" not in js
        examples = (await client.get("/static/sudoku-examples.json")).json()
        assert set(examples["difficulties"]) == {"easy", "medium", "hard"}
        for bad in ("/static/..%2Fapp.py", "/static/nope.js", "/static/.hidden", "/static/registry.py"):
            assert (await client.get(bad)).status_code == 404, bad
        # every API path the script calls is in the OpenAPI document (the public contract)
        paths = set(app.openapi()["paths"])
        called = set(re.findall(r'"(/v1/[a-z/]+|/openapi\.json)"', js))
        called |= {f"/v1/{task}/solve" for task in ("sudoku", "maze", "arc")}  # built as `/v1/${task}/solve`
        assert called - {"/openapi.json"} <= paths and "/v1/stats" in called and "/v1/models" in called


def test_bundled_examples_are_real_puzzles_from_the_shared_data():
    examples = json.loads((STATIC_DIR / "sudoku-examples.json").read_text())
    for level, items in examples["difficulties"].items():
        assert len(items) >= 3, level
        for item in items:
            path = DATA / "sudoku" / item["source"]
            require_shared(path)
            with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
                rows = list(csv.reader(f))[1:]
            assert rows[item["row"]][1] == item["puzzle"] and int(rows[item["row"]][3]) == item["rating"]
            sudoku.parse(item["puzzle"])
