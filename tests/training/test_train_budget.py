"""What the loop promises beyond one step: the wall-time budget across resumes, AdamW, gradient
clipping, and an evaluation in the middle of a run that a resume reproduces."""

from __future__ import annotations

import json
import types

import pytest
import torch

from tests.training.test_train import _cfg
from training import trainer as trainer_module
from training.ddp import DistInfo
from training.trainer import Trainer


class FakeClock:
    """perf_counter for the trainer: time moves only when a training step runs (10 s per step)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    real_step = Trainer.train_step

    def step(self):
        out = real_step(self)
        fake.now += 10.0
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    return fake


def test_max_minutes_stops_the_run_and_counts_wall_time_across_resumes(tmp_path, clock):
    cfg = _cfg(tmp_path, max_steps=0, epochs=0, max_minutes=1.0)  # 60 s = 6 steps of 10 s
    first = Trainer(cfg, DistInfo())
    result = first.train()
    assert result["step"] == 6 and result["wall_s"] == pytest.approx(60.0)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and state["wall_s"] == pytest.approx(60.0)
    # the same budget again: nothing left to train, and no step is taken
    again = Trainer(cfg, DistInfo())
    assert again.train()["step"] == 6
    # a larger budget counts the 60 s already spent: 6 more steps, 120 s in all
    cfg.run.max_minutes = 2.0
    resumed = Trainer(cfg, DistInfo())
    assert resumed.step == 6 and resumed.wall_s == pytest.approx(60.0)
    result = resumed.train()
    assert result["step"] == 12 and result["wall_s"] == pytest.approx(120.0)


def test_adamw_is_built_from_the_config_and_resumes_exactly(tmp_path):
    def cfg(sub, steps):
        c = _cfg(tmp_path / sub, max_steps=steps)
        c.optim.name, c.optim.adamw_eps, c.optim.beta2 = "adamw", 1e-6, 0.98
        return c

    trainer = Trainer(cfg("a", 6), DistInfo())
    opt = trainer.optimizer
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-6 and group["weight_decay"] == 0.1
    trainer.train()
    assert all(len(opt.state[p]) and int(opt.state[p]["step"]) == 6 for p in trainer.model.parameters())
    Trainer(cfg("b", 3), DistInfo()).train()
    resumed = Trainer(cfg("b", 6), DistInfo())
    assert resumed.step == 3
    resumed.train()
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def _grad_norms_seen_by_the_optimizer(trainer: Trainer, steps: int) -> list[float]:
    seen: list[float] = []
    real = trainer.optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real(*args, **kwargs)

    trainer.optimizer.step = step
    for _ in range(steps):
        trainer.train_step()
    return seen


def test_grad_clip_bounds_the_global_gradient_norm(tmp_path):
    unclipped = _grad_norms_seen_by_the_optimizer(Trainer(_cfg(tmp_path / "a"), DistInfo()), 3)
    limit = min(unclipped) / 4
    assert limit > 0
    cfg = _cfg(tmp_path / "b")
    cfg.optim.grad_clip = limit
    clipped = _grad_norms_seen_by_the_optimizer(Trainer(cfg, DistInfo()), 3)
    assert all(n <= limit * (1 + 1e-4) for n in clipped), (clipped, limit)
    assert clipped[0] == pytest.approx(limit, rel=1e-4)  # the first step's gradients are the same, scaled down


def test_mid_run_evaluation_then_resume_matches_the_uninterrupted_run(tmp_path):
    def cfg(sub, steps):
        c = _cfg(tmp_path / sub, max_steps=steps, eval_interval=2, log_interval=2)
        c.data.holdout, c.data.eval_limit = 8, 8
        return c

    full = Trainer(cfg("a", 6), DistInfo())
    full.train()
    Trainer(cfg("b", 4), DistInfo()).train()  # evaluates at steps 2 and 4, checkpoints at 4
    resumed = Trainer(cfg("b", 6), DistInfo())
    assert resumed.step == 4
    resumed.train()
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for name, a in full.ema.shadow.items():
        assert torch.equal(a, resumed.ema.shadow[name]), name

    def evals(sub):
        rows = [json.loads(x) for x in (tmp_path / sub / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: {k: v for k, v in r.items() if k not in ("time", "wall_s", "seconds")}
                for r in rows if r["kind"] == "eval"}

    a, b = evals("a"), evals("b")
    assert sorted(a) == [2, 4, 6] and sorted(b) == [2, 4, 6]
    assert a == b
