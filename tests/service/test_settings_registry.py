"""Settings from the environment, model loading and its failure messages, and the `trm serve` CLI."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from service.cli import main
from service.registry import ModelRegistry, RegistryError, UnknownModelError
from service.settings import Settings, warn_unknown_env
from tests.service.conftest import make_model, make_settings
from trm_core import save_checkpoint


def test_settings_read_trm_env_vars(monkeypatch, tmp_path):
    monkeypatch.setenv("TRM_MODELS", f"a={tmp_path}/x.safetensors, {tmp_path}/y.safetensors")
    monkeypatch.setenv("TRM_MAX_BATCH", "8")
    monkeypatch.setenv("TRM_BATCHING", "request")
    monkeypatch.setenv("TRM_CORS_ORIGINS", '["https://a.example"]')
    monkeypatch.setenv("TRM_API_KEY", "s" * 20)
    s = Settings()
    assert s.model_specs() == [("a", tmp_path / "x.safetensors"), ("y", tmp_path / "y.safetensors")]
    assert (s.max_batch, s.batching, s.cors_origins) == (8, "request", ["https://a.example"])
    assert s.api_key.get_secret_value() == "s" * 20 and "s" * 20 not in repr(s)


@pytest.mark.parametrize("env, message", [
    ({"TRM_MAX_BATCH": "0"}, "max_batch"),
    ({"TRM_BATCHING": "fast"}, "batching"),
    ({"TRM_DEVICE": "tpu"}, "TRM_DEVICE='tpu' is not a device"),
    ({"TRM_API_KEY": "short"}, "shorter than 16"),
    ({"TRM_DEFAULT_MAX_STEPS": "90", "TRM_MAX_STEPS_LIMIT": "64"}, "exceeds TRM_MAX_STEPS_LIMIT=64"),
    ({"TRM_CORS_ORIGINS": "*", "TRM_API_KEY": "k" * 20}, "exposes the key"),
])
def test_bad_settings_are_refused_with_the_fix(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_halting_modes_come_from_trm_core(monkeypatch):
    """TRM_DEFAULT_HALTING and the `halting` option accept exactly trm_core.halting's modes, in its order."""
    from service.api.schemas import SolveOptions
    from trm_core.halting import HALTING_MODES

    assert SolveOptions.model_json_schema()["properties"]["halting"]["anyOf"][0]["enum"] == list(HALTING_MODES)
    for mode in HALTING_MODES:
        monkeypatch.setenv("TRM_DEFAULT_HALTING", mode)
        assert Settings().default_halting == mode and SolveOptions(halting=mode).halting == mode
    monkeypatch.setenv("TRM_DEFAULT_HALTING", "budget")
    with pytest.raises(ValidationError, match="default_halting"):
        Settings()
    with pytest.raises(ValidationError, match="halting"):
        SolveOptions(halting="budget")


def test_unknown_fields_and_env_typos():
    with pytest.raises(ValidationError, match="max_bach"):
        Settings(max_bach=3)
    assert warn_unknown_env({"TRM_MAX_BACH": "3", "TRM_PORT": "1", "HOME": "/"}) == ["TRM_MAX_BACH"]


def test_duplicate_model_names_are_refused(tmp_path):
    s = Settings(models=[f"{tmp_path}/a/m.safetensors", f"{tmp_path}/b/m.safetensors"])
    with pytest.raises(ValueError, match="names 'm' twice"):
        s.model_specs()


def test_registry_loads_defaults_per_task_and_looks_up_by_name(checkpoints):
    registry = ModelRegistry(make_settings(checkpoints, names=("sudoku_eager", "sudoku", "maze")))
    registry.load()
    assert registry.defaults == {"sudoku": "sudoku_eager", "maze": "maze"}
    assert registry.get("sudoku").name == "sudoku_eager" and registry.get("sudoku", "sudoku").name == "sudoku"
    with pytest.raises(UnknownModelError, match="models for sudoku: sudoku_eager, sudoku"):
        registry.get("sudoku", "maze")
    assert registry.models["maze"].grid_shape == (10, 10)
    assert not registry.is_ready  # loaded, but no worker runs yet


@pytest.mark.parametrize("case", ["missing", "garbage", "vocab", "no_arc_table", "bad_arc_table", "task"])
def test_a_bad_checkpoint_stops_start_up_with_one_clear_line(tmp_path, case):
    path = tmp_path / "m.safetensors"
    expected = {
        "missing": "does not exist",
        "garbage": "not a safetensors file",
        "vocab": "vocab_size=11; the maze codec uses 6",
        "no_arc_table": "'arc_tasks' is missing",
        "bad_arc_table": "puzzle_id 99 is outside the model's puzzle table",
        "task": "task 'chess' has no codec",
    }[case]
    if case == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif case == "vocab":
        # a Sudoku-shaped model (vocab 11, 81 cells) that claims to solve mazes
        save_checkpoint(make_model("sudoku", task="maze"), path, metadata={"task": "maze"})
    elif case == "no_arc_table":
        save_checkpoint(make_model("arc"), path, metadata={"task": "arc"})
    elif case == "bad_arc_table":
        save_checkpoint(make_model("arc"), path, metadata={"task": "arc", "arc_tasks": {"f" * 64: [{"puzzle_id": 99}]}})
    elif case == "task":
        save_checkpoint(make_model("sudoku", task="chess"), path, metadata={"task": "chess"})
    registry = ModelRegistry(Settings(models=[f"m={path}"], device="cpu"))
    with pytest.raises(RegistryError) as e:
        registry.load()
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"cannot serve model 'm' from {path}: ") and expected in line


def test_cli_reports_a_bad_checkpoint_in_one_line_and_exit_code(tmp_path, capsys, caplog):
    missing = tmp_path / "nope.safetensors"
    with caplog.at_level(logging.CRITICAL):
        assert main([str(missing), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trm serve: cannot serve model 'nope' from {missing}: checkpoint {missing} does not exist"]
    assert main(["--max-batch", "0"]) == 2
    assert "TRM_MAX_BATCH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "TRM_REQUEST_TIMEOUT_S" in capsys.readouterr().out


def test_no_models_at_all_is_a_clear_error():
    with pytest.raises(RegistryError, match="no models to serve: set TRM_MODELS"):
        ModelRegistry(Settings(models=[], device="cpu")).load()
