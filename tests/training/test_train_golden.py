"""One step of our training loop reproduces the original's first training step (golden fixtures).

The model tests (tests/trm_core) cover the model; these cover that the trainer composes it correctly: the rows it
refills, the loss divided by the global batch size, the gradients reaching every parameter and the
puzzle-embedding rows, and the training-time halting decision.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.conftest import FIXTURES, require_shared
from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.ddp import DistInfo
from training.examples import Examples
from training.trainer import Trainer
from trm_core import import_original
from trm_core.original import rename_original_keys

NAMES = ["sudoku_mlp_t", "arc_att_rope", "maze_att_learned_noprefix"]


def _load(name: str):
    path = FIXTURES / f"{name}.golden.safetensors"
    require_shared(path, "a golden fixture of the original code")
    with safe_open(str(path), "pt") as f:
        golden = {k: f.get_tensor(k) for k in f.keys()}
        original_config = json.loads(f.metadata()["original_config"])
    state = torch.load(FIXTURES / f"{name}.checkpoint.pt", map_location="cpu", weights_only=True)
    return import_original(state, original_config), golden


def _examples(golden: dict[str, torch.Tensor]) -> Examples:
    """The fixture batch as a dataset: one example per puzzle, each puzzle its own group."""
    n = golden["inputs"].shape[0]
    ar = np.arange(n + 1, dtype=np.int32)
    return Examples(golden["inputs"].numpy().astype(np.int64), golden["labels"].numpy().astype(np.int64),
                    golden["puzzle_identifiers"].numpy().astype(np.int32), ar, ar.copy(), {})


@pytest.mark.parametrize("name", NAMES)
def test_first_training_step_matches_original(name, tmp_path):
    model, golden = _load(name)
    B = golden["inputs"].shape[0]
    cfg = TrainConfig(model=model.config, data=DataConfig(), optim=OptimConfig(),
                      run=RunConfig(dir=str(tmp_path), global_batch_size=B, max_steps=1, halt_exploration_prob=0.0,
                                    progress=False, tensorboard=False))
    trainer = Trainer(cfg, DistInfo(), train_data=_examples(golden), model=model)
    trainer.forward_backward()

    # The stream shuffles; map each slot back to its fixture row through the inputs it holds.
    slot_inputs = trainer.carry.inputs.long()
    row_of_slot = [int(torch.nonzero((golden["inputs"].long() == slot_inputs[s]).all(-1))[0]) for s in range(B)]
    assert sorted(row_of_slot) == list(range(B)), "every fixture row must be drawn exactly once"
    torch.testing.assert_close(trainer.labels, golden["labels"].long()[row_of_slot])

    # loss: sum over rows, divided by the global batch size (the fixture holds the undivided sum)
    torch.testing.assert_close(trainer.last_loss.double(), golden["train.step1.loss"].double().reshape(()),
                               rtol=1e-5, atol=1e-5)
    grads = rename_original_keys({k.removeprefix("train.step1.grad."): v for k, v in golden.items()
                                  if k.startswith("train.step1.grad.") and "local_weights" not in k})
    params = dict(model.named_parameters())
    assert set(grads) == set(params)
    for pname, expected in grads.items():
        got = params[pname].grad
        assert got is not None, pname
        torch.testing.assert_close(got * B, expected, rtol=1e-3, atol=1e-5, msg=lambda m, n=pname: f"{n}: {m}")
    key = "train.step1.grad.model.inner.puzzle_emb.local_weights"
    if key in golden:
        local = model.puzzle_emb.local_weights.grad
        torch.testing.assert_close(local * B, golden[key][row_of_slot], rtol=1e-3, atol=1e-6)
    # halting after the step: q_halt > 0 or the cap (exploration off), as the original
    assert trainer.halted.tolist() == golden["train.step1.halted"].bool()[row_of_slot].tolist()
