"""ARC adaptation jobs end to end: real app, real tiny ARC checkpoint, real tasks it was not trained on."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.service.conftest import make_settings, serve, small_arc_tasks

pytestmark = pytest.mark.anyio

FAST = dict(adapt_versions=2, adapt_batch_size=4, adapt_max_steps=4)


def unseen_tasks(n: int) -> list[dict]:
    """Real tasks beyond the two in the test checkpoint's table (conftest's `arc_table`)."""
    return list(small_arc_tasks(2 + n).values())[2:]


async def wait_state(client, job_id: str, states: set[str], timeout_s: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = (await client.get(f"/v1/arc/tasks/{job_id}")).json()
        if body["state"] in states:
            return body
        assert time.monotonic() < deadline, f"job still {body['state']}: {body}"
        await asyncio.sleep(0.05)


async def test_unseen_task_adapts_then_solves_at_once(checkpoints):
    task = unseen_tasks(1)[0]
    async with serve(make_settings(checkpoints, names=("arc",), **FAST)) as (_, client):
        refused = await client.post("/v1/arc/solve", json={"task": task, "max_steps": 1})
        assert refused.status_code == 422 and "/v1/arc/tasks" in refused.json()["detail"]
        resp = await client.post("/v1/arc/tasks", json={"task": task})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert resp.headers["location"] == f"/v1/arc/tasks/{job['id']}" and job["state"] in ("queued", "running")
        done = await wait_state(client, job["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded", done
        assert done["steps"] == 4 and done["stopped"] == "steps" and done["progress"]["step"] == 4
        assert 0.0 <= done["heldout_accuracy"] <= 1.0 and done["heldout_accuracy_before"] is not None
        assert len(done["attempts"]) == len(task["test"]) and done["num_versions"] == 2
        solved = await client.post("/v1/arc/solve", json={"task": task, "max_steps": 1})
        assert solved.status_code == 200, solved.text
        assert solved.json()["num_versions"] == 2 and len(solved.json()["attempts"]) == len(task["test"])
        again = await client.post("/v1/arc/tasks", json={"task": task})  # cache hit: nothing trained
        assert again.status_code == 200 and again.json()["cached"] and again.json()["state"] == "succeeded"
        assert again.json()["attempts"] == done["attempts"]
        metrics = (await client.get("/metrics")).text
        assert 'trm_adapt_jobs_total{model="arc",state="succeeded"} 1.0' in metrics
        assert 'trm_adapt_seconds_count{model="arc"} 1.0' in metrics
        assert 'trm_adapt_heldout_accuracy_count{model="arc"} 1.0' in metrics
        assert 'trm_adapt_jobs_held{model="arc",state="succeeded"} 2.0' in metrics


async def test_budget_is_capped_by_the_server(checkpoints):
    task = unseen_tasks(1)[0]
    async with serve(make_settings(checkpoints, names=("arc",), **FAST)) as (_, client):
        job = (await client.post("/v1/arc/tasks", json={"task": task, "max_steps": 1000})).json()
        assert job["max_steps"] == 4  # TRM_ADAPT_MAX_STEPS caps what a client asks for
        done = await wait_state(client, job["id"], {"succeeded", "failed"})
        assert done["steps"] == 4
    timed = dict(FAST, adapt_max_steps=100_000, adapt_max_s=0.3)
    async with serve(make_settings(checkpoints, names=("arc",), **timed)) as (_, client):
        job = (await client.post("/v1/arc/tasks", json={"task": task})).json()
        done = await wait_state(client, job["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded" and done["stopped"] == "time" and 1 <= done["steps"] < 100_000


async def test_a_job_seen_between_its_state_and_its_finish_time_is_not_expired(checkpoints):
    """Expiry reads jobs without the job thread's lock: a finished state whose time is not stamped yet
    (the window a loaded machine once hit, answering 404 for a job that had just succeeded) must not
    count as finished at time 0."""
    task = unseen_tasks(1)[0]
    async with serve(make_settings(checkpoints, names=("arc",), **FAST)) as (app, client):
        job = (await client.post("/v1/arc/tasks", json={"task": task})).json()
        done = await wait_state(client, job["id"], {"succeeded", "failed"})
        record = app.state.adapt.jobs[job["id"]]
        record.finished = None  # the state is already "succeeded": the window, held open
        again = await client.get(f"/v1/arc/tasks/{job['id']}")
        assert again.status_code == 200 and again.json()["state"] == done["state"]
        record.finish(record.state)
        assert record.finished is not None and (await client.get(f"/v1/arc/tasks/{job['id']}")).status_code == 200


async def test_cancel_running_and_queued_jobs_and_queue_full(checkpoints):
    a, b, c = unseen_tasks(3)
    slow = dict(FAST, adapt_max_steps=100_000, adapt_max_s=120.0, adapt_queue=1)
    async with serve(make_settings(checkpoints, names=("arc",), **slow)) as (_, client):
        running = (await client.post("/v1/arc/tasks", json={"task": a})).json()
        # a must hold the one adaptation thread before b queues, or b would find the queue full of a
        await wait_state(client, running["id"], {"running"})
        queued = (await client.post("/v1/arc/tasks", json={"task": b})).json()
        full = await client.post("/v1/arc/tasks", json={"task": c})
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert full.headers["content-type"] == "application/problem+json"
        dup = await client.post("/v1/arc/tasks", json={"task": b})  # the same task joins its job
        assert dup.status_code == 200 and dup.json()["id"] == queued["id"]
        body = (await client.delete(f"/v1/arc/tasks/{queued['id']}")).json()
        assert body["state"] == "cancelled"  # queued: at once
        await wait_state(client, running["id"], {"running"})
        deadline = time.monotonic() + 30
        while ((await client.get(f"/v1/arc/tasks/{running['id']}")).json()["progress"] or {}).get("step", 0) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await client.delete(f"/v1/arc/tasks/{running['id']}")
        done = await wait_state(client, running["id"], {"cancelled", "succeeded", "failed"})
        assert done["state"] == "cancelled" and done["attempts"] is None
        assert (await client.post("/v1/arc/solve", json={"task": a})).status_code == 422  # nothing installed
        assert (await client.post("/v1/arc/tasks", json={"task": c})).status_code == 202  # room again
        missing = await client.get("/v1/arc/tasks/nope")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_adapted_rows_survive_a_restart_with_adapt_dir(checkpoints, tmp_path):
    task = unseen_tasks(1)[0]
    settings = make_settings(checkpoints, names=("arc",), adapt_dir=tmp_path, **FAST)
    async with serve(settings) as (_, client):
        job = (await client.post("/v1/arc/tasks", json={"task": task})).json()
        done = await wait_state(client, job["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded"
        first = (await client.post("/v1/arc/solve", json={"task": task, "max_steps": 2})).json()
    saved = list((tmp_path / "arc").glob("*.safetensors"))
    assert [p.stem for p in saved] == [done["fingerprint"]]
    async with serve(settings) as (_, client):  # a new process would see the same: nothing in memory
        again = await client.post("/v1/arc/solve", json={"task": task, "max_steps": 2})
        assert again.status_code == 200, again.text
        assert again.json()["attempts"] == first["attempts"] and again.json()["votes"] == first["votes"]
        cached = (await client.post("/v1/arc/tasks", json={"task": task})).json()
        assert cached["cached"] and cached["heldout_accuracy"] == done["heldout_accuracy"]
    async with serve(make_settings(checkpoints, names=("arc",), **FAST)) as (_, client):  # no TRM_ADAPT_DIR
        assert (await client.post("/v1/arc/solve", json={"task": task})).status_code == 422


async def test_job_records_survive_a_restart_with_adapt_dir(checkpoints, tmp_path):
    """With TRM_ADAPT_DIR a restart keeps finished jobs as they were and runs the queued ones (and one the
    shutdown stopped); a record a crash left `running` comes back failed, with the reason."""
    first, *later = unseen_tasks(3)
    settings = make_settings(checkpoints, names=("arc",), adapt_dir=tmp_path, adapt_concurrency=1,
                             **{**FAST, "adapt_max_steps": 400})
    async with serve(settings) as (_, client):
        job = (await client.post("/v1/arc/tasks", json={"task": first, "max_steps": 4})).json()
        done = await wait_state(client, job["id"], {"succeeded"})
        waiting = [(await client.post("/v1/arc/tasks", json={"task": t})).json() for t in later]
        assert [w["state"] for w in waiting][1:] == ["queued"]  # one thread: the second waits for the first
    records = tmp_path / "arc" / "jobs"
    on_disk = {p.stem: json.loads(p.read_text()) for p in records.glob("*.json")}
    assert set(on_disk) == {done["id"], *(w["id"] for w in waiting)}
    assert on_disk[done["id"]]["state"] == "succeeded" and on_disk[waiting[1]["id"]]["state"] == "queued"
    assert on_disk[waiting[0]["id"]]["state"] in ("queued", "succeeded")  # put back by the shutdown, or done
    crashed = {**on_disk[waiting[1]["id"]], "id": "crashed", "state": "running", "started": time.time()}
    (records / "crashed.json").write_text(json.dumps(crashed))

    async with serve(settings) as (_, client):
        assert (await client.get(f"/v1/arc/tasks/{done['id']}")).json() == done
        failed = (await client.get("/v1/arc/tasks/crashed")).json()
        assert failed["state"] == "failed" and "stopped while this job was running" in failed["error"]
        for w in waiting:
            finished = await wait_state(client, w["id"], {"succeeded", "failed", "cancelled"}, timeout_s=300)
            assert finished["state"] == "succeeded", finished
            solved = await client.post("/v1/arc/solve", json={"task": later[waiting.index(w)], "max_steps": 1})
            assert solved.status_code == 200, solved.text
    assert json.loads((records / "crashed.json").read_text())["state"] == "failed"
