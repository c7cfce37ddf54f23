"""The loop on real Sudoku data: the loss falls, accuracy rises, resume is exact, halting refills rows."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import DATA, require_shared, tiny_config
from training.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig
from training.ddp import DistInfo
from training.train import main as train_main
from training.trainer import Trainer

TRAIN_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


def _cfg(tmp_path, **run) -> TrainConfig:
    require_shared(TRAIN_CSV, "the Sudoku training CSV")
    model = tiny_config(num_puzzle_identifiers=1, halt_max_steps=4)
    data = DataConfig(path=str(TRAIN_CSV), train_limit=200, augment=True, reveal_start=0.95, reveal_end=0.95)
    optim = OptimConfig(lr=3e-3, lr_warmup_steps=5, weight_decay=0.1, puzzle_emb_lr=1e-3, ema_warmup=True)
    base = dict(dir=str(tmp_path), global_batch_size=16, max_steps=40, log_interval=10, checkpoint_interval=0,
                progress=False, tensorboard=False, num_threads=1, seed=3)
    return TrainConfig(model=model, data=data, optim=optim, run=RunConfig(**{**base, **run}))


def test_loss_falls_and_accuracy_rises_on_real_sudoku(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(_cfg(tmp_path), DistInfo())
    first_sums = torch.zeros(7, dtype=torch.float64)
    last_sums = torch.zeros(7, dtype=torch.float64)
    losses = []
    for i in range(40):
        sums, _ = trainer.train_step()
        losses.append(float(trainer.last_loss) / 16)
        if i < 8:
            first_sums += sums
        if i >= 32:
            last_sums += sums
    early, late = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert late < 0.6 * early, (early, late)
    # cell accuracy of the rows that halted in the last 8 steps vs the first 8 (sums[1] / sums[0])
    assert last_sums[0] > 0 and first_sums[0] > 0
    assert last_sums[1] / last_sums[0] > first_sums[1] / first_sums[0] + 0.2


def test_every_halted_row_is_refilled_and_others_keep_their_puzzle(tmp_path):
    trainer = Trainer(_cfg(tmp_path, halt_exploration_prob=0.5), DistInfo())
    trainer.train_step()
    for _ in range(6):
        before_inputs = trainer.carry.inputs.clone()
        before_steps = trainer.carry.steps.clone()
        halted = trainer.halted.clone()
        draws = trainer.stream.draws.copy()
        trainer.train_step()
        kept = ~halted
        assert torch.equal(trainer.carry.inputs[kept], before_inputs[kept])
        assert torch.equal(trainer.carry.steps[kept], before_steps[kept] + 1)
        assert torch.equal(trainer.carry.steps[halted], torch.ones_like(trainer.carry.steps[halted]))
        # exactly one new example per halted slot; nothing drawn (or dropped) for running slots
        assert (trainer.stream.draws - draws).tolist() == halted.long().tolist()
        assert int(trainer.carry.steps.max()) <= trainer.cfg.model.halt_max_steps


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    full = Trainer(_cfg(tmp_path / "a", max_steps=8), DistInfo())
    full.train()
    cfg_b = _cfg(tmp_path / "b", max_steps=4)
    part = Trainer(cfg_b, DistInfo())
    part.train()  # saves a checkpoint at step 4
    cfg_b.run.max_steps = 8
    resumed = Trainer(cfg_b, DistInfo())
    assert resumed.step == 4
    resumed.train()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for name, a in full.ema.shadow.items():
        assert torch.equal(a, resumed.ema.shadow[name]), name
    assert torch.equal(full.carry.z_H, resumed.carry.z_H)
    assert (full.stream.draws == resumed.stream.draws).all()


def test_cli_trains_checkpoints_and_writes_metrics(tmp_path):
    require_shared(TRAIN_CSV, "the Sudoku training CSV")
    run = tmp_path / "run"
    argv = ["sudoku-demo", f"--run.dir={run}", "run.max_steps=6", "--run.log_interval", "3",
            "--model.hidden_size=32", "--model.puzzle_emb_ndim=32", "--run.global_batch_size=8",
            f"--data.path={TRAIN_CSV}", "--data.holdout=10", "--data.train_limit=100", "--run.progress=false",
            "--run.eval_interval=0", "--run.num_threads=1", "--run.tensorboard=false"]
    assert train_main(argv) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == [3, 6]
    assert any(r["kind"] == "eval" and r["count"] == 10 for r in lines)
    assert (run / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 6


def test_cli_rejects_unknown_override(tmp_path, capsys):
    assert train_main(["sudoku-demo", "--optim.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and "lr" in err


def test_resume_false_refuses_to_overwrite_a_checkpoint(tmp_path):
    Trainer(_cfg(tmp_path, max_steps=1), DistInfo()).train()
    cfg = _cfg(tmp_path, max_steps=2)
    cfg.run.resume = False
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        Trainer(cfg, DistInfo())


def test_init_from_starts_a_new_run_from_exported_weights_and_resume_ignores_it(tmp_path):
    from trm_core.checkpoint import save_checkpoint

    source = Trainer(_cfg(tmp_path / "a", max_steps=3), DistInfo())
    source.train()
    weights = tmp_path / "a.safetensors"
    save_checkpoint(source.model, weights)
    # deeper recursion is allowed: the weights do not depend on it
    cfg = _cfg(tmp_path / "b", init_from=str(weights), max_steps=2)
    cfg = TrainConfig(model=cfg.model.replace(halt_max_steps=6, L_cycles=cfg.model.L_cycles + 1), data=cfg.data,
                      optim=cfg.optim, run=cfg.run)
    warm = Trainer(cfg, DistInfo())
    for name, t in source.model.state_dict().items():
        assert torch.equal(warm.model.state_dict()[name], t), name
    assert all(torch.equal(t, source.model.state_dict()[name]) for name, t in warm.ema.shadow.items())
    warm.train()
    trained = {k: v.clone() for k, v in warm.model.state_dict().items()}
    resumed = Trainer(cfg, DistInfo())  # its own checkpoint wins over init_from
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in trained.items())
    assert any(not torch.equal(trained[k], source.model.state_dict()[k]) for k in trained)
    wider = _cfg(tmp_path / "c", init_from=str(weights))
    wider = TrainConfig(model=wider.model.replace(hidden_size=wider.model.hidden_size * 2), data=wider.data,
                        optim=wider.optim, run=wider.run)
    with pytest.raises(ConfigError, match="only the recursion counts"):
        Trainer(wider, DistInfo())
