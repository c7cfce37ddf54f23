"""TrainConfig: one dataclass tree (model, data, optim, run), read from TOML, overridden from the CLI.

Precedence (lowest to highest): dataclass defaults < the TOML file < command-line overrides.
Overrides are `--section.key=value` (or `section.key=value`, or `--section.key value`); the value is
converted to the field's type and checked, and an unknown section or key fails listing the valid ones.
This is nanoGPT's configurator without `exec`: a config file is data, never code.

The `model` section maps 1:1 onto `trm_core.TRMConfig`. What the data decides (the number of puzzle
identifiers of an ARC build) is taken from the dataset at start-up by `train.py`, and logged.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from trm_core import TRMConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (pyproject: tomli; python_version < "3.11")
    import tomli as tomllib

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "ConfigError", "load_config",
           "apply_overrides", "parse_cli", "config_help"]


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


@dataclass(kw_only=True)
class DataConfig:
    # training data: a built dataset dir (original .npy layout: <path>/train/...) or a raw Sudoku CSV(.gz)
    path: str = ""
    # evaluation data: a built dir (its `test` split is used) or a raw CSV; "" = <path>/test when it exists
    eval_path: str = ""
    eval_limit: int = 0  # 0 = every eval example; else the first N (keeps periodic evals cheap)
    train_limit: int = 0  # raw CSV only: use the first N puzzles (0 = all)
    holdout: int = 0  # raw CSV only: keep the last N training puzzles out, to evaluate in-distribution
    augment: bool = False  # online augmentation per drawn example (Sudoku: digits, bands, stacks, transpose)
    # curriculum (Sudoku, Maze): reveal a fraction of the cells to fill in (Sudoku blanks, maze path cells)
    # from the answer, annealed linearly from reveal_start to reveal_end over curriculum_steps optimizer
    # steps (0/0 = off, the paper).
    reveal_start: float = 0.0
    reveal_end: float = 0.0
    curriculum_steps: int = 0
    eval_reveal: float = -1.0  # fraction revealed at evaluation; -1 = the curriculum's value at that step


@dataclass(kw_only=True)
class OptimConfig:
    name: Literal["adam_atan2", "adamw"] = "adam_atan2"
    lr: float = 1e-4
    lr_min_ratio: float = 1.0  # cosine floor as a fraction of lr; 1.0 = constant after warm-up (paper)
    lr_warmup_steps: int = 2000
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    adamw_eps: float = 1e-8  # only used by name="adamw" (AdamATan2 has no epsilon)
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    # global grad-norm clip; 0 = off, as the original (pretrain.py never clips)
    grad_clip: float = 0.0
    ema: bool = True
    ema_rate: float = 0.999
    ema_warmup: bool = False  # decay min(ema_rate, (1+t)/(10+t)); for short runs (the original has none)


@dataclass(kw_only=True)
class RunConfig:
    dir: str = "runs/default"
    seed: int = 0
    global_batch_size: int = 768  # rows in the ACT slot pool across all ranks
    epochs: int = 0  # paper-style budget: steps = epochs * groups * mean_examples / global_batch_size
    max_steps: int = 0  # optimizer (= ACT) steps; overrides epochs when > 0
    max_minutes: float = 0.0  # stop (and checkpoint) after this much training wall time, summed over resumes
    resume: bool = True  # continue from <dir>/checkpoint when it exists (false: refuse to touch it)
    halt_exploration_prob: float = 0.1
    eval_interval: int = 0  # steps between evaluations (0 = only at the end)
    checkpoint_interval: int = 1000  # steps between resumable checkpoints (0 = only at the end)
    log_interval: int = 50  # steps between loss/accuracy syncs (`.item()`) and JSONL lines
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    bf16: bool = True  # bf16 autocast, CUDA only (ignored on CPU)
    compile: bool = True  # torch.compile of the step, CUDA only (ignored on CPU)
    tensorboard: bool = True  # also write TensorBoard events when the package is installed
    progress: bool = True  # tqdm progress bar on the main rank
    num_threads: int = 0  # torch.set_num_threads on CPU; 0 = leave torch's default


@dataclass(kw_only=True)
class TrainConfig:
    model: TRMConfig = field(default_factory=TRMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.run.global_batch_size < 1:
            raise ConfigError(f"run.global_batch_size={self.run.global_batch_size} must be >= 1")
        if not 0.0 <= self.run.halt_exploration_prob <= 1.0:
            raise ConfigError(f"run.halt_exploration_prob={self.run.halt_exploration_prob} must be in [0, 1]")
        if not 0.0 <= self.optim.ema_rate < 1.0:
            raise ConfigError(f"optim.ema_rate={self.optim.ema_rate} must be in [0, 1)")
        if self.optim.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip={self.optim.grad_clip} must be >= 0 (0 = off)")
        for name in ("reveal_start", "reveal_end"):
            value = getattr(self.data, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.{name}={value} must be a fraction in [0, 1]")
        if (self.data.reveal_start or self.data.reveal_end) and self.model.task not in ("sudoku", "maze"):
            raise ConfigError(f"data.reveal_* (the answer-revealing curriculum) is for Sudoku and Maze; "
                              f"model.task={self.model.task!r}. Set data.reveal_start=0 data.reveal_end=0.")
        if self.run.epochs <= 0 and self.run.max_steps <= 0 and self.run.max_minutes <= 0:
            raise ConfigError("no training budget: set run.max_steps, run.epochs or run.max_minutes")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": dataclasses.asdict(self.data),
                "optim": dataclasses.asdict(self.optim), "run": dataclasses.asdict(self.run)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; valid sections: {sorted(_SECTIONS)}")
        built: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            values = dict(data.get(name, {}))
            valid = {f.name for f in fields(section_cls)}
            bad = sorted(set(values) - valid)
            if bad:
                raise ConfigError(f"unknown key(s) {[f'{name}.{k}' for k in bad]}; valid keys in [{name}]: "
                                  f"{sorted(valid)}")
            hints = typing.get_type_hints(section_cls)
            checked = {k: _convert(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
            try:
                built[name] = section_cls(**checked)
            except ValueError as e:
                raise ConfigError(f"[{name}]: {e}") from e
        return cls(**built)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


_SECTIONS: dict[str, type] = {"model": TRMConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def _convert(key: str, value: Any, typ: Any) -> Any:
    """Convert `value` (from TOML or a CLI string) to the field type `typ`, or raise naming the key."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {list(choices)}")
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r} is not a boolean; use true or false")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is a boolean; expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} is not an integer")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} is not a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r} is not a string")
    raise ConfigError(f"{key}: unsupported field type {typ!r}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (leading `--` allowed) to a raw config dict; returns a new dict.

    Values stay strings here; `TrainConfig.from_dict` converts and type-checks them against the field.
    """
    out = {k: dict(v) for k, v in data.items()}
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} has no value; write --section.key=value, e.g. --optim.lr=3e-4")
        dotted, value = text.split("=", 1)
        if dotted.count(".") != 1:
            raise ConfigError(f"override {item!r}: key must be section.key, e.g. run.max_steps; "
                              f"sections: {sorted(_SECTIONS)}")
        section, key = dotted.split(".")
        if section not in _SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; valid sections: {sorted(_SECTIONS)}")
        valid = {f.name for f in fields(_SECTIONS[section])}
        if key not in valid:
            raise ConfigError(f"override {item!r}: unknown key {section}.{key}; valid keys in [{section}]: "
                              f"{sorted(valid)}")
        out.setdefault(section, {})[key] = value
    return out


def _join_spaced(overrides: list[str]) -> list[str]:
    """Accept `--section.key value` as well as `--section.key=value`."""
    out: list[str] = []
    i = 0
    while i < len(overrides):
        item = overrides[i]
        if item.startswith("--") and "=" not in item and i + 1 < len(overrides) \
                and not overrides[i + 1].startswith("--"):
            out.append(f"{item}={overrides[i + 1]}")
            i += 2
        else:
            out.append(item)
            i += 1
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML config (or only defaults when `path` is None) and apply CLI overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            known = sorted(x.stem for x in CONFIG_DIR.glob("*.toml"))
            candidate = CONFIG_DIR / f"{p.name}.toml" if p.suffix != ".toml" else CONFIG_DIR / p.name
            if candidate.is_file():
                p = candidate
            else:
                raise ConfigError(f"config file {str(path)!r} not found; bundled configs: {known}")
        with p.open("rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{p}: not valid TOML: {e}") from e
    data = apply_overrides(data, _join_spaced(list(overrides or [])))
    return TrainConfig.from_dict(data)


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def parse_cli(argv: list[str]) -> tuple[str | None, list[str]]:
    """Split `CONFIG [overrides...]`: the first argument without '=' and not starting with '-' is the file."""
    path: str | None = None
    rest: list[str] = []
    for i, arg in enumerate(argv):
        if path is None and not arg.startswith("-") and "=" not in arg and (i == 0 or "=" in argv[i - 1]
                                                                            or not argv[i - 1].startswith("--")):
            path = arg
        else:
            rest.append(arg)
    return path, rest


def config_help() -> str:
    """Every override with its type and default, for `--help`."""
    lines = []
    sections = {"model": TRMConfig(), "data": DataConfig(), "optim": OptimConfig(), "run": RunConfig()}
    for name, obj in sections.items():
        hints = typing.get_type_hints(type(obj))
        for f in fields(obj):
            typ = hints[f.name]
            tname = typ.__name__ if isinstance(typ, type) else str(typ).replace("typing.", "")
            lines.append(f"  --{name}.{f.name}={getattr(obj, f.name)!r}  ({tname})")
    return "\n".join(lines)
