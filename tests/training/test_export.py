"""`trm export`: EMA weights + live buffers + train summary (+ arc_tasks for ARC) in one servable file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import DATA, require_shared, tiny_config
from tests.training.test_eval import tiny_arc  # noqa: F401 - module-scoped fixture (a real ARC build)
from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.ddp import DistInfo
from training.export import ExportError, export_run
from training.export import main as export_main
from training.trainer import Trainer
from trm_core import load_checkpoint

TRAIN_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


def _sudoku_run(tmp_path) -> Trainer:
    require_shared(TRAIN_CSV, "the Sudoku training CSV")
    cfg = TrainConfig(model=tiny_config(num_puzzle_identifiers=1),
                      data=DataConfig(path=str(TRAIN_CSV), train_limit=50, holdout=10),
                      optim=OptimConfig(lr=1e-2, lr_warmup_steps=1, puzzle_emb_lr=1e-2, ema_rate=0.9),
                      run=RunConfig(dir=str(tmp_path / "run"), global_batch_size=8, max_steps=3, progress=False,
                                    tensorboard=False))
    trainer = Trainer(cfg, DistInfo())
    trainer.train()
    return trainer


def test_export_writes_ema_weights_live_buffers_and_summary(tmp_path, capsys):
    trainer = _sudoku_run(tmp_path)
    out = tmp_path / "model.safetensors"
    assert export_main([str(tmp_path / "run"), "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    model, meta = load_checkpoint(out)
    params = dict(model.named_parameters())
    for name, shadow in trainer.ema.shadow.items():
        assert torch.equal(params[name], shadow), name
    assert not all(torch.equal(params[n], p) for n, p in trainer.model.named_parameters())  # EMA != live
    assert torch.equal(model.puzzle_emb.weights, trainer.model.puzzle_emb.weights)  # table: live, not EMA'd
    assert meta["task"] == "sudoku" and meta["train"]["steps"] == 3 and meta["train"]["ema"] is True
    assert meta["train"]["last_eval"]["count"] == 10  # the end-of-run evaluation on the holdout
    assert meta["train_config"]["run"]["global_batch_size"] == 8
    assert meta["config"] == trainer.model.config

    live = tmp_path / "live.safetensors"
    export_run(tmp_path / "run", live, use_ema=False)
    model_live, meta_live = load_checkpoint(live)
    for name, p in trainer.model.named_parameters():
        assert torch.equal(dict(model_live.named_parameters())[name], p), name
    assert meta_live["train"]["ema"] is False


def test_export_of_a_missing_run_fails_with_a_reason(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_arc_export_carries_the_task_table(tmp_path, tiny_arc):  # noqa: F811
    root, _ = tiny_arc
    data_dir = tmp_path / "arcdata"
    shutil.copytree(root, data_dir)
    cfg = TrainConfig(model=tiny_config(seq_len=900, vocab_size=12, task="arc", grid_height=30, grid_width=30,
                                        halt_max_steps=2, H_cycles=1, L_cycles=1),
                      data=DataConfig(path=str(data_dir), eval_limit=2),
                      optim=OptimConfig(lr=1e-3, puzzle_emb_lr=1e-2),
                      run=RunConfig(dir=str(tmp_path / "run"), global_batch_size=2, max_steps=2, progress=False,
                                    tensorboard=False))
    trainer = Trainer(cfg, DistInfo())
    assert trainer.model.config.num_puzzle_identifiers > 3  # taken from the build (blank + versions)
    trainer.train()
    out = tmp_path / "arc.safetensors"
    meta = export_run(tmp_path / "run", out)
    table = json.loads((data_dir / "arc_tasks.json").read_text())
    assert meta["arc_tasks"] == table
    _, loaded = load_checkpoint(out)
    assert loaded["arc_tasks"] == table and loaded["task"] == "arc"
    (data_dir / "arc_tasks.json").unlink()
    with pytest.raises(ExportError, match="arc_tasks.json"):
        export_run(tmp_path / "run", tmp_path / "arc2.safetensors")


def test_export_writes_the_serving_recipe_from_a_run_and_onto_a_model_file(tmp_path, capsys):
    from trm_core.checkpoint import Recipe, read_metadata

    trainer = _sudoku_run(tmp_path)
    out = tmp_path / "model.safetensors"
    assert export_main([str(tmp_path / "run"), "-o", str(out), "--recipe", "views=128,max_steps=16,halting=verified"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recipe"] == {"views": 128, "max_steps": 16, "halting": "verified"} and printed["steps"] == 3
    model, meta = load_checkpoint(out)
    assert meta["recipe"] == Recipe(128, 16, "verified") and meta["train"]["steps"] == 3
    assert all(torch.equal(dict(model.named_parameters())[n], s) for n, s in trainer.ema.shadow.items())

    # on the model file itself: the recipe changes, the weights and the other metadata do not
    assert export_main([str(out), "-o", str(out), "--recipe", '{"views": 8, "max_steps": 12, "halting": "fixed"}']) == 0
    assert json.loads(capsys.readouterr().out)["recipe"] == {"views": 8, "max_steps": 12, "halting": "fixed"}
    model2, meta2 = load_checkpoint(out)
    assert meta2["recipe"] == Recipe(8, 12, "fixed") and meta2["train"] == meta["train"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True))
    copy = tmp_path / "plain.safetensors"
    assert export_main([str(out), "-o", str(copy), "--recipe", "none"]) == 0
    assert "recipe" not in read_metadata(copy) and read_metadata(out)["recipe"] == Recipe(8, 12, "fixed")
    capsys.readouterr()

    # bad recipes are refused naming the field, and nothing is written
    for bad, named in (("views=0,max_steps=16,halting=verified", "recipe.views"),
                       ("views=8,max_steps=16", "missing halting"),
                       ("views=8,max_steps=16,halting=soon", "recipe.halting"),
                       ("views 8", "not key=value")):
        assert export_main([str(tmp_path / "run"), "-o", str(tmp_path / "x.safetensors"), "--recipe", bad]) == 2
        assert named in capsys.readouterr().err
        assert export_main([str(out), "-o", str(out), "--recipe", bad]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists() and read_metadata(out)["recipe"] == Recipe(8, 12, "fixed")
    assert export_main([str(out), "-o", str(out)]) == 2  # a model file without --recipe: nothing to do
    assert "only --recipe applies" in capsys.readouterr().err
