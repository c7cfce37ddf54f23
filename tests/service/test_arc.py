"""ARC answers over HTTP: `valid` is null (no rule check), malformed predictions never become attempts."""

from __future__ import annotations

import pytest
import torch

from tests.service.conftest import arc_table, make_model, make_settings, serve, small_arc_tasks
from trm_core import save_checkpoint
from trm_core.tasks import arc

pytestmark = pytest.mark.anyio


async def test_arc_valid_is_null_and_schema_says_so(checkpoints):
    tasks = list(small_arc_tasks(2).values())
    async with serve(make_settings(checkpoints, names=("arc", "sudoku"))) as (app, client):
        one = (await client.post("/v1/arc/solve", json={"task": tasks[0], "max_steps": 1})).json()
        assert "valid" in one and one["valid"] is None and "trajectory" not in one
        for grid_pair in one["attempts"]:
            for grid in grid_pair:
                assert arc.verify(tasks[0]["test"][0]["input"], grid) == []
        batch = (await client.post("/v1/arc/solve", json={"tasks": tasks, "max_steps": 1})).json()
        assert [r["valid"] for r in batch["results"]] == [None, None]
        sudoku = (await client.post("/v1/sudoku/solve", json={"puzzle": "." * 81, "max_steps": 1})).json()
        assert isinstance(sudoku["valid"], bool)  # Sudoku keeps "passed the rules"
        spec = (await client.get("/openapi.json")).json()
        valid = spec["components"]["schemas"]["ArcSolveResult"]["properties"]["valid"]
        assert valid["type"] == "null" and "unknown" in valid["description"]
        metrics = (await client.get("/metrics")).text
        assert 'trm_answers_total{model="arc",task="arc",valid="unknown"} 3.0' in metrics


async def test_arc_malformed_predictions_are_violations_not_attempts(tmp_path):
    """An output head of zeros predicts PAD everywhere: nothing decodes, so no version gives a grid."""
    tasks = small_arc_tasks(1)
    task = next(iter(tasks.values()))
    model = make_model("arc")
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: argmax is token 0 (PAD)
    path = tmp_path / "blank.safetensors"
    save_checkpoint(model, path, metadata={"task": "arc", "arc_tasks": arc_table(tasks)})
    async with serve(make_settings({"arc": path}, names=("arc",))) as (_, client):
        body = (await client.post("/v1/arc/solve", json={"task": task, "max_steps": 1})).json()
    n = len(task["test"])
    assert body["attempts"] == [[]] * n and body["votes"] == [[]] * n and body["valid"] is None
    assert len(body["violations"]) == n
    assert all("3 of 3 versions gave no well-formed grid" in v and "not voted" in v for v in body["violations"])
