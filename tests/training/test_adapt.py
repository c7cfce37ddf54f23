"""Test-time adaptation on real ARC tasks the model never saw, with a tiny real model (10x10 canvas)."""

from __future__ import annotations

import pytest
import torch

from tests.service.conftest import make_model, small_arc_tasks
from training.adapt import AdaptConfig, adapt_task, adapted_copy, install_rows, mean_row, predict_versions
from trm_core.tasks import arc


@pytest.fixture(scope="module")
def unseen():
    """A real ARC-AGI-1 training task with at least 3 demonstration pairs; the model was trained on none."""
    for task in small_arc_tasks(12).values():
        if len(task["train"]) >= 3:
            return arc.parse_task(task)
    pytest.skip("no small task with 3 demonstration pairs")


def _mean(xs):
    return sum(xs) / len(xs)


def test_adaptation_lowers_the_demonstration_loss_and_leaves_the_model_alone(unseen):
    model = make_model("arc", halt_bias=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = adapt_task(model, unseen, AdaptConfig(max_steps=80, num_versions=4, batch_size=8, puzzle_emb_lr=3e-2))
    assert res.steps == 80 and res.stopped == "steps" and len(res.losses) == 80
    assert _mean(res.losses[-10:]) < 0.95 * _mean(res.losses[:10]), (res.losses[:10], res.losses[-10:])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # served model untouched
    start = mean_row(model)
    assert res.rows.shape == (4, start.shape[0]) and not torch.allclose(res.rows, start.expand_as(res.rows))
    assert res.heldout_index is not None and res.before is not None
    assert 0.0 <= res.after.heldout_exact <= res.after.heldout_cells <= 1.0 and res.after.heldout_pass2 in (0.0, 1.0)
    assert len(res.after.attempts) == len(unseen.test_inputs)
    for attempts in res.after.attempts:
        assert 1 <= len(attempts) <= 2 and all(arc.verify(unseen.test_inputs[0], g) == [] for g in attempts)


def test_new_rows_start_at_the_table_mean_and_install_answers_like_the_copy(unseen):
    model = make_model("arc", halt_bias=0.0)
    res = adapt_task(model, unseen, AdaptConfig(max_steps=5, num_versions=3, batch_size=4, measure_before=False))
    fresh = adapted_copy(model, 3)
    assert torch.equal(fresh.puzzle_emb.weights[1:], mean_row(model).expand(3, -1))
    assert fresh.lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()  # frozen network is shared
    n_before = model.puzzle_emb.weights.shape[0]
    base = model.puzzle_emb.weights
    ids = install_rows(model, res.rows)
    assert ids == [n_before, n_before + 1, n_before + 2] and model.config.num_puzzle_identifiers == n_before + 3
    assert model.puzzle_emb.weights is base  # the loaded table is kept by reference, never copied
    # the served model with the installed ids answers exactly as the adapted copy with its local ids
    clone = adapted_copy(model, 3)
    clone.puzzle_emb.weights[1:] = res.rows
    via_copy = predict_versions(clone, unseen.test_inputs, res.versions)
    served = adapted_copy(model, 0)
    served.puzzle_emb.weights = torch.cat([base[:1], model.puzzle_emb(torch.tensor(ids))])
    assert torch.equal(served.puzzle_emb.weights[1:], res.rows)
    assert predict_versions(served, unseen.test_inputs, res.versions) == via_copy
    # a second install extends the extension only; old ids still read the base table
    more = install_rows(model, res.rows[:1] + 1.0)
    assert more == [n_before + 3] and model.puzzle_emb.weights is base
    lookup = model.puzzle_emb(torch.tensor([0, n_before - 1, *ids, *more]))
    assert torch.equal(lookup[:2], base[[0, n_before - 1]]) and torch.equal(lookup[2:5], res.rows)
    assert torch.equal(lookup[5], res.rows[0] + 1.0)


def test_budgets_and_cancellation(unseen):
    model = make_model("arc", halt_bias=0.0)
    cfg = dict(num_versions=2, batch_size=4, measure_before=False)
    res = adapt_task(model, unseen, AdaptConfig(max_steps=1000, max_seconds=0.2, **cfg))
    assert res.stopped == "time" and 1 <= res.steps < 1000
    calls = []
    res = adapt_task(model, unseen, AdaptConfig(max_steps=1000, **cfg), should_stop=lambda: len(calls) >= 3,
                     progress=calls.append)
    assert res.stopped == "cancelled" and res.steps == 3 and [p.step for p in calls] == [1, 2, 3]


def test_network_mode_trains_a_copy(unseen):
    model = make_model("arc", halt_bias=0.0)
    res = adapt_task(model, unseen, AdaptConfig(max_steps=30, num_versions=2, batch_size=4, train_network=True,
                                                lr=3e-3, measure_before=False))
    assert res.model is not None and not torch.equal(res.model.lm_head.weight, model.lm_head.weight)
    assert _mean(res.losses[-5:]) < _mean(res.losses[:5])


def test_grids_that_do_not_fit_the_canvas_are_refused():
    model = make_model("arc")
    big = {"train": [{"input": [[1] * 12] * 12, "output": [[1]]}], "test": [{"input": [[1]]}]}
    with pytest.raises(ValueError, match="does not fit"):
        adapt_task(model, big, AdaptConfig(max_steps=1))


def test_cli_writes_the_arc_prize_submission_for_a_challenges_file(tmp_path, capsys):
    import json

    from trm_cli import main
    from trm_core import save_checkpoint

    ckpt = tmp_path / "arc.safetensors"
    save_checkpoint(make_model("arc", halt_bias=0.0), ckpt, metadata={"task": "arc"})
    tasks = dict(list(small_arc_tasks(4).items())[2:])
    challenges = {name: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]}
                  for name, t in tasks.items()}
    (tmp_path / "x_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "x_solutions.json").write_text(json.dumps({n: [p["output"] for p in t["test"]]
                                                           for n, t in tasks.items()}))
    out = tmp_path / "submission.json"
    argv = ["arc-solve", str(tmp_path / "x_challenges.json"), "--model", str(ckpt), "--steps", "3",
            "--versions", "2", "--batch-size", "4", "-o", str(out)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    sub = json.loads(out.read_text())
    assert list(sub) == list(tasks) and report["tasks"] == 2 and 0.0 <= report["pass@2"] <= 1.0
    for name, task in tasks.items():
        assert len(sub[name]) == len(task["test"])
        assert all(set(e) == {"attempt_1", "attempt_2"} for e in sub[name])
        assert report["per_task"][name]["steps"] == 3
    one = tmp_path / "one.json"
    one.write_text(json.dumps(next(iter(challenges.values()))))
    assert main(["arc-solve", str(one), "--model", str(ckpt), "--steps", "2", "--versions", "2",
                 "-o", str(tmp_path / "one_sub.json")]) == 0
    assert list(json.loads((tmp_path / "one_sub.json").read_text())) == ["one"]
