"""The paper's ARC protocol (up to 1000 versions of a task, voted) through the scheduler, memory bounded.

A request's version rows wait in the model's bounded queue (TRM_MAX_QUEUE) and run through its
fixed pool of slots (TRM_MAX_BATCH); nothing is sized by the number of versions except the queue
entries themselves (one 30x30 input each), and a request larger than the queue is refused.
"""

from __future__ import annotations

import random

import pytest

from service.registry import ModelRegistry
from trm_core import save_checkpoint
from trm_core.tasks import arc
from trm_core.tasks.augment import ArcAug

from .conftest import make_model, make_settings, serve, small_arc_tasks

NUM_VERSIONS = 1000
SLOTS = 8


@pytest.fixture
def many_versions(tmp_path):
    """A tiny ARC model trained (here: randomly initialised) on one task's 1000 versions."""
    name, task = next(iter(small_arc_tasks(1).items()))
    task = {"train": task["train"], "test": task["test"][:1]}
    rng = random.Random(0)
    augs = [ArcAug()] + [ArcAug.random(rng) for _ in range(NUM_VERSIONS - 1)]
    table = {arc.task_fingerprint(task): [{"puzzle_id": 1 + i, "k": a.k, "perm": "".join(map(str, a.perm))}
                                          for i, a in enumerate(augs)]}
    path = tmp_path / "arc1000.safetensors"
    save_checkpoint(make_model("arc", num_puzzle_identifiers=1 + NUM_VERSIONS), path,
                    metadata={"task": "arc", "arc_tasks": table})
    return task, path


@pytest.mark.anyio
async def test_a_thousand_versions_run_through_the_slots(many_versions):
    task, path = many_versions
    settings = make_settings({"arc": path}, names=("arc",), arc_max_versions=NUM_VERSIONS, max_batch=SLOTS,
                             max_queue=NUM_VERSIONS)
    async with serve(settings) as (app, client):
        r = await client.post("/v1/arc/solve", json={"task": {"train": task["train"], "test": [
            {"input": t["input"]} for t in task["test"]]}, "max_steps": 2, "halting": "fixed"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["num_versions"] == NUM_VERSIONS and len(body["attempts"]) == 1
        assert sum(body["votes"][0]) <= NUM_VERSIONS
        registry: ModelRegistry = app.state.registry
        stats = registry.get("arc").scheduler.stats()
        assert stats.num_slots == SLOTS  # the pool never grew with the request
        assert stats.num_rows_finished >= NUM_VERSIONS
        # 1000 rows x 2 steps through 8 slots: at least 250 engine steps, never all rows at once
        assert stats.num_steps >= NUM_VERSIONS * 2 // SLOTS
        assert stats.num_waiting == 0 and stats.num_running == 0


@pytest.mark.anyio
async def test_more_rows_than_the_queue_holds_are_refused(many_versions):
    task, path = many_versions
    settings = make_settings({"arc": path}, names=("arc",), arc_max_versions=NUM_VERSIONS, max_batch=SLOTS,
                             max_queue=NUM_VERSIONS - 1)
    async with serve(settings) as (app, client):
        r = await client.post("/v1/arc/solve", json={"task": {"train": task["train"], "test": [
            {"input": t["input"]} for t in task["test"]]}, "max_steps": 1})
        assert r.status_code == 422
        assert f"needs {NUM_VERSIONS} rows" in r.text and "TRM_MAX_QUEUE" in r.text
        assert app.state.registry.get("arc").scheduler.stats().num_steps == 0  # refused before any row ran
