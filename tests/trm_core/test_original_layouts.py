"""`trm convert-original` on the checkpoint layouts met in the wild, each checked against the golden step.

The fixture is a real checkpoint of the original code (`arc_att_rope`, shared fixtures) with the
first ACT step's logits it produced; every layout below must convert to the same model.
"""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch

from trm_core import CheckpointFormatError, load_checkpoint
from trm_core.cli import main as trm_main
from trm_core.original import load_original_file

from ..conftest import FIXTURES
from .test_checkpoint import assert_golden_first_step

NAME = "arc_att_rope"


def _golden_step(path):
    return assert_golden_first_step(path, NAME)


def _run_dir(tmp_path, state, step_name="step_518071"):
    """A checkpoint folder as pretrain.py leaves it: `step_N` (no extension) beside all_config.yaml."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    torch.save(state, run / step_name)
    shutil.copy(FIXTURES / f"{NAME}.all_config.yaml", run / "all_config.yaml")
    return run / step_name


def _convert(ckpt, out, *extra):
    return trm_main(["convert-original", str(ckpt), "--dataset-json", str(FIXTURES / f"{NAME}.dataset.json"),
                     "-o", str(out), *extra])


def _state():
    return torch.load(FIXTURES / f"{NAME}.checkpoint.pt", weights_only=True)


def _strip(state, prefix="_orig_mod."):
    return {k.removeprefix(prefix): v for k, v in state.items()}


@pytest.mark.parametrize("layout", ["compiled", "plain", "ddp_compiled", "train_state_adamw", "ema_wrapped",
                                    "legacy_format"])
def test_layouts_convert_to_the_same_model(layout, tmp_path, shared):
    state = _state()
    assert all(k.startswith("_orig_mod.") for k in state)
    if layout == "plain":  # saved without torch.compile
        state = _strip(state)
    elif layout == "ddp_compiled":
        state = {f"module.{k}": v for k, v in state.items()}
    elif layout == "train_state_adamw":  # a fork's training state: weights, AdamW state, step
        params = [torch.nn.Parameter(v.float().clone()) for v in state.values() if v.dtype == torch.float32][:3]
        opt = torch.optim.AdamW(params, lr=1e-4)
        sum(p.sum() for p in params).backward()
        opt.step()
        state = {"model": _strip(state), "optimizer": opt.state_dict(), "step": 7}
    elif layout == "ema_wrapped":  # EMA weights preferred over the live ones
        live = {k: torch.zeros_like(v) for k, v in state.items()}
        state = {"model": live, "ema": state}
    if layout == "legacy_format":  # torch's pre-zip format cannot be memory-mapped: read whole
        run = tmp_path / "run"
        run.mkdir()
        torch.save(state, run / "step_5", _use_new_zipfile_serialization=False)
        shutil.copy(FIXTURES / f"{NAME}.all_config.yaml", run / "all_config.yaml")
        ckpt = run / "step_5"
    else:
        ckpt = _run_dir(tmp_path, state)
    out = tmp_path / "m.safetensors"
    assert _convert(ckpt, out) == 0  # no --config: all_config.yaml beside the file
    _, meta = _golden_step(out)
    assert meta["train"]["checkpoint"] == ckpt.name and meta["train"]["run"]["ema"] is True


def test_bfloat16_table_is_stored_as_float32(tmp_path, shared):
    state = {k: v.bfloat16() if k.endswith("puzzle_emb.weights") else v for k, v in _state().items()}
    out = tmp_path / "m.safetensors"
    assert _convert(_run_dir(tmp_path, state), out) == 0
    model, _ = load_checkpoint(out)
    assert model.puzzle_emb.weights.dtype == torch.float32
    assert torch.equal(model.puzzle_emb.weights, state["_orig_mod.model.inner.puzzle_emb.weights"].float())


def test_ema_shadow_alone_is_refused_with_the_fix(tmp_path, shared, capsys):
    """EMAHelper.state_dict() holds parameters only: no H_init/L_init, no puzzle table."""
    shadow = {k: v for k, v in _state().items() if not k.endswith(("H_init", "L_init", "puzzle_emb.weights"))}
    assert _convert(_run_dir(tmp_path, shadow), tmp_path / "m.safetensors") == 2
    err = capsys.readouterr().err
    assert "EMA helper's shadow dict" in err and err.count("\n") == 1
    assert not (tmp_path / "m.safetensors").exists()


def test_missing_config_and_pickled_code_are_refused(tmp_path, shared, capsys):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    torch.save(_state(), lonely / "step_1")
    assert _convert(lonely / "step_1", tmp_path / "m.safetensors") == 2
    assert "no all_config.yaml beside" in capsys.readouterr().err

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    bad = tmp_path / "bad"
    bad.mkdir()
    with open(bad / "step_1", "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(CheckpointFormatError, match="only weights_only checkpoints are accepted"):
        load_original_file(bad / "step_1", mmap=True)
    assert "executed" not in capsys.readouterr().out


def test_dataset_folder_brings_the_arc_tasks_table(tmp_path, shared):
    """--dataset DIR: dataset.json's fields and, for ARC, arc_tasks.json go into the checkpoint."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    shutil.copy(FIXTURES / f"{NAME}.dataset.json", data / "train" / "dataset.json")
    table = {"ab" * 32: [{"puzzle_id": 1, "k": 0, "perm": "0123456789"}, {"puzzle_id": 2, "k": 3,
                                                                          "perm": "0987654321"}]}
    (data / "arc_tasks.json").write_text(__import__("json").dumps(table))
    out = tmp_path / "m.safetensors"
    ckpt = _run_dir(tmp_path, _state())
    assert trm_main(["convert-original", str(ckpt), "--dataset", str(data), "-o", str(out), "grid_height=8",
                     "grid_width=8"]) == 0
    model, meta = _golden_step(out)
    assert meta["arc_tasks"] == table and model.config.task == "arc"
