"""Evaluation metrics against a direct computation, rank sharding, the CLI, and ARC pass@K plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import DATA, require_shared, tiny_model
from training.evaluate import arc_pass_at_k, eval_inputs, evaluate_model
from training.evaluate import main as eval_main
from training.examples import load_examples

TRAIN_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"
TEST_GZ = DATA / "sudoku" / "forum_hardest_1905_11plus_test.csv.gz"
ARC_EVAL = DATA / "arc" / "arc-agi-1" / "evaluation"


@pytest.fixture(scope="module")
def tiny_arc(tmp_path_factory):
    """A real ARC build (tasks helper's builder): 3 ARC-AGI-1 evaluation tasks x (identity + 2 versions)."""
    require_shared(ARC_EVAL, "the ARC-AGI-1 evaluation tasks")
    from training.data.build_arc import ArcBuildConfig, build_arc

    root = tmp_path_factory.mktemp("arc")
    build_arc(ArcBuildConfig(out=root, subsets=(ARC_EVAL,), test_set=ARC_EVAL, num_aug=2, max_tasks=3))
    return root, load_examples(root, "test")


def _model():
    return tiny_model(seed=1, num_puzzle_identifiers=1, halt_max_steps=4)


def _data(n=12):
    require_shared(TRAIN_CSV, "the Sudoku training CSV")
    return load_examples(TRAIN_CSV, limit=n)


def test_metrics_match_a_direct_computation():
    model, data = _model(), _data()
    with torch.no_grad():  # make the halting head fire for some rows at some steps
        model.q_head.bias.fill_(0.0)
    res = evaluate_model(model, data, batch_size=5, reveal=0.5)
    inputs = torch.as_tensor(eval_inputs(data, 0.5).astype(np.int64))
    labels = torch.as_tensor(data.labels.astype(np.int64))
    B = inputs.shape[0]
    with torch.no_grad():
        carry = model.reset_rows(model.empty_carry(B), torch.ones(B, dtype=torch.bool), inputs,
                                 torch.zeros(B, dtype=torch.long))
        outs = []
        for _ in range(4):
            carry, out = model.step(carry)
            outs.append(out)
    final = outs[-1].logits.argmax(-1)
    assert res["count"] == B and res["max_steps"] == 4
    assert res["exact_accuracy"] == pytest.approx(float((final == labels).all(-1).float().mean()))
    assert res["cell_accuracy"] == pytest.approx(float((final == labels).float().mean()), abs=1e-6)
    q_right = (outs[-1].q_halt_logits >= 0) == (final == labels).all(-1)
    assert res["q_halt_accuracy"] == pytest.approx(float(q_right.float().mean()))
    fired = torch.stack([o.q_halt_logits > 0 for o in outs], 1)  # [B, steps]
    fired[:, -1] = True
    first = fired.float().argmax(1)  # first step where the learned policy halts
    assert res["mean_halt_step"] == pytest.approx(float((first + 1).float().mean()))
    learned = torch.stack([outs[int(s)].logits.argmax(-1)[b] for b, s in enumerate(first)])
    assert res["learned_exact_accuracy"] == pytest.approx(float((learned == labels).all(-1).float().mean()))
    assert 1 <= res["mean_halt_step"] < 4  # the head really fired early for some rows


def test_rank_shards_cover_every_example_once():
    model, data = _model(), _data(11)
    full = evaluate_model(model, data, batch_size=4)
    parts = [evaluate_model(model, data, batch_size=4, rank=r, world_size=3) for r in range(3)]
    assert sum(p["count"] for p in parts) == full["count"] == 11
    for key in ("cell_accuracy", "mean_halt_step"):
        assert sum(p[key] * p["count"] for p in parts) / 11 == pytest.approx(full[key])


def test_eval_cli_on_a_raw_csv_gz(tmp_path, capsys):
    require_shared(TEST_GZ, "the Sudoku test CSV")
    from trm_core import save_checkpoint

    model = _model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"task": "sudoku"})
    assert eval_main([str(path), str(TEST_GZ), "--limit", "16", "--reveal", "0.3"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["count"] == 16 and res["reveal"] == 0.3 and res["task"] == "sudoku"
    direct = evaluate_model(model, load_examples(TEST_GZ, limit=16), reveal=0.3)
    assert res["cell_accuracy"] == pytest.approx(direct["cell_accuracy"])
    assert eval_main([str(path), str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_arc_pass_at_k_is_one_for_perfect_predictions(tiny_arc):
    root, data = tiny_arc
    result = {"preds": torch.as_tensor(np.where(data.labels < 0, 0, data.labels).astype(np.int64)),
              "q_halt": torch.zeros(data.num_examples), "index": torch.arange(data.num_examples)}
    assert arc_pass_at_k(result, data, root) == {"pass@1": 1.0, "pass@2": 1.0}
    # one version voting for a wrong answer does not outvote the others
    wrong = result["preds"].clone()
    wrong[0] = 0
    scores = arc_pass_at_k({**result, "preds": wrong}, data, root)
    assert scores["pass@2"] == 1.0
    nothing = arc_pass_at_k({**result, "preds": torch.zeros_like(wrong)}, data, root)
    assert nothing == {"pass@1": 0.0, "pass@2": 0.0}


def test_eval_cli_on_an_arc_build_reports_pass_at_k(tiny_arc, tmp_path, capsys):
    root, data = tiny_arc
    from tests.conftest import tiny_config
    from trm_core import TRM, save_checkpoint

    num_ids = int(data.meta["num_puzzle_identifiers"])
    torch.manual_seed(0)
    model = TRM(tiny_config(seq_len=900, vocab_size=12, task="arc", grid_height=30, grid_width=30, halt_max_steps=2,
                            H_cycles=1, L_cycles=1, num_puzzle_identifiers=num_ids))
    path = tmp_path / "arc.safetensors"
    save_checkpoint(model, path, metadata={"task": "arc"})
    assert eval_main([str(path), str(root)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["count"] == data.num_examples and res["task"] == "arc"
    assert 0.0 <= res["pass@1"] <= res["pass@2"] <= 1.0
