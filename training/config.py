"""TrainConfig: four typed sections (model, data, optim, run), read from TOML, overridden from the CLI.

Precedence (lowest to highest): field defaults < the TOML file < command-line overrides. The TOML
tables and the overrides are merged as plain dicts, then validated once by the pydantic models below.
Overrides are `--section.key=value` (or `section.key=value`, or `--section.key value`); an unknown
section or key fails listing the valid ones. This is nanoGPT's configurator without `exec`: a config
file is data, never code.

Types are strict where a typo would otherwise pass silently: a TOML `1` is not `true`, `3.0` is not an
integer, `true` is not a number. Only strings are parsed, since every command-line value is one
(`"7"`, `"1_000"`, `"3e-4"`, `"true"`/`"yes"`/`"1"`, `"false"`/`"no"`/`"0"`). Validation errors are
reported as one `ConfigError` line naming the key, e.g. `run.max_steps='many' is not an integer`.

The `model` section maps 1:1 onto `trm_core.TRMConfig`, which stays a plain frozen dataclass (the
core does not depend on pydantic): its fields are validated here, then `TRMConfig` checks the
combination. What the data decides (the number of puzzle identifiers of an ARC build) is taken from
the dataset at start-up by `train.py`, and logged.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import core_schema

from trm_core import TRMConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (pyproject: tomli; python_version < "3.11")
    import tomli as tomllib

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "ConfigError", "load_config",
           "apply_overrides", "parse_cli", "config_help"]


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the fix."""


# ---- field types: strict, except that a string (every command-line value) is parsed first -------------
def _from_string(parse: Callable[[str], Any]) -> BeforeValidator:
    def before(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                pass  # left as is: the strict check then names the key and the expected type
        return value

    return BeforeValidator(before)


def _parse_bool(text: str) -> bool:
    word = text.lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise ValueError(text)


Int = Annotated[int, _from_string(lambda text: int(text.replace("_", "")))]
Float = Annotated[float, _from_string(float)]
Bool = Annotated[bool, _from_string(_parse_bool)]


class _Section(BaseModel):
    """One `[section]` of a config: unknown keys fail, types are strict (see the module doc)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    section: ClassVar[str]

    def __init__(self, **values: Any) -> None:  # Python callers get the same one-line ConfigError
        try:
            super().__init__(**values)
        except ValidationError as e:
            errors = [{**err, "loc": (self.section, *err["loc"])} for err in e.errors()]
            raise ConfigError(_describe(errors, {self.section: values})) from e


class DataConfig(_Section):
    section: ClassVar[str] = "data"
    # training data: a built dataset dir (original .npy layout: <path>/train/...) or a raw Sudoku CSV(.gz)
    path: str = ""
    # evaluation data: a built dir (its `test` split is used) or a raw CSV; "" = <path>/test when it exists
    eval_path: str = ""
    eval_limit: Int = 0  # 0 = every eval example; else the first N (keeps periodic evals cheap)
    train_limit: Int = 0  # raw CSV only: use the first N puzzles (0 = all)
    holdout: Int = 0  # raw CSV only: keep the last N training puzzles out, to evaluate in-distribution
    augment: Bool = False  # online augmentation per drawn example (Sudoku: digits, bands, stacks, transpose)
    # curriculum (Sudoku, Maze): reveal a fraction of the cells to fill in (Sudoku blanks, maze path cells)
    # from the answer, annealed linearly from reveal_start to reveal_end over curriculum_steps optimizer
    # steps (0/0 = off, the paper).
    reveal_start: Float = 0.0
    reveal_end: Float = 0.0
    curriculum_steps: Int = 0
    # each drawn example reveals its own fraction, uniform in [0, 2 x the curriculum's value] (same mean):
    # the batch then mixes puzzles as posted with easier ones instead of holding one difficulty
    reveal_uniform: Bool = False
    eval_reveal: Float = -1.0  # fraction revealed at evaluation; -1 = the curriculum's value at that step


class OptimConfig(_Section):
    section: ClassVar[str] = "optim"
    name: Literal["adam_atan2", "adamw"] = "adam_atan2"
    lr: Float = 1e-4
    lr_min_ratio: Float = 1.0  # cosine floor as a fraction of lr; 1.0 = constant after warm-up (paper)
    lr_warmup_steps: Int = 2000
    beta1: Float = 0.9
    beta2: Float = 0.95
    weight_decay: Float = 0.1
    adamw_eps: Float = 1e-8  # only used by name="adamw" (AdamATan2 has no epsilon)
    puzzle_emb_lr: Float = 1e-2
    puzzle_emb_weight_decay: Float = 0.1
    # global grad-norm clip; 0 = off, as the original (pretrain.py never clips)
    grad_clip: Float = 0.0
    ema: Bool = True
    ema_rate: Float = 0.999
    ema_warmup: Bool = False  # decay min(ema_rate, (1+t)/(10+t)); for short runs (the original has none)


class RunConfig(_Section):
    section: ClassVar[str] = "run"
    dir: str = "runs/default"
    seed: Int = 0
    global_batch_size: Int = 768  # rows in the ACT slot pool across all ranks
    epochs: Int = 0  # paper-style budget: steps = epochs * groups * mean_examples / global_batch_size
    max_steps: Int = 0  # optimizer (= ACT) steps; overrides epochs when > 0
    max_minutes: Float = 0.0  # stop (and checkpoint) after this much training wall time, summed over resumes
    resume: Bool = True  # continue from <dir>/checkpoint when it exists (false: refuse to touch it)
    # warm start: a model .safetensors (e.g. `trm export` output) whose weights start a new run; a run that
    # resumes from its own checkpoint ignores it. Its config must match [model] except the recursion counts.
    init_from: str = ""
    halt_exploration_prob: Float = 0.1
    eval_interval: Int = 0  # steps between evaluations (0 = only at the end)
    checkpoint_interval: Int = 1000  # steps between resumable checkpoints (0 = only at the end)
    log_interval: Int = 50  # steps between loss/accuracy syncs (`.item()`) and JSONL lines
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    bf16: Bool = True  # bf16 autocast, CUDA only (ignored on CPU)
    compile: Bool = True  # torch.compile of the step, CUDA only (ignored on CPU)
    tensorboard: Bool = True  # also write TensorBoard events when the package is installed
    progress: Bool = True  # tqdm progress bar on the main rank
    num_threads: Int = 0  # torch.set_num_threads on CPU; 0 = leave torch's default


# ---- [model]: the fields of TRMConfig, validated like the other sections, then TRMConfig itself -------
# ModelSection has TRMConfig's fields and defaults (Literal and str fields as they are), so a field added
# to TRMConfig is a [model] key without an edit here.
_STRICT_TYPES: dict[Any, Any] = {int: Int, float: Float, bool: Bool}
_TRM_HINTS = typing.get_type_hints(TRMConfig)
ModelSection = create_model(
    "ModelSection", __base__=_Section,
    **{f.name: (_STRICT_TYPES.get(_TRM_HINTS[f.name], _TRM_HINTS[f.name]), f.default)
       for f in dataclasses.fields(TRMConfig)})
ModelSection.section = "model"


def _model_field_schema(_source: Any, handler: Any) -> core_schema.CoreSchema:
    """`model` accepts a TRMConfig as is (it validated itself) or a table, validated as ModelSection."""
    from_table = core_schema.no_info_after_validator_function(
        lambda section: TRMConfig(**dict(section)), handler.generate_schema(ModelSection))

    def keep_instance(value: Any, validate: Callable[[Any], Any]) -> TRMConfig:
        return value if isinstance(value, TRMConfig) else validate(value)

    return core_schema.no_info_wrap_validator_function(
        keep_instance, from_table, serialization=core_schema.plain_serializer_function_ser_schema(TRMConfig.to_dict))


ModelField = Annotated[TRMConfig, GetPydanticSchema(_model_field_schema)]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelField = Field(default_factory=TRMConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def __init__(self, **sections: Any) -> None:
        try:
            super().__init__(**sections)
        except ValidationError as e:
            raise ConfigError(_describe(e.errors(), sections)) from e

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
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
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": self.data.model_dump(),
                "optim": self.optim.model_dump(), "run": self.run.model_dump()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_describe(e.errors(), data)) from e

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


_SECTIONS: dict[str, type[_Section]] = {"model": ModelSection, "data": DataConfig, "optim": OptimConfig,
                                        "run": RunConfig}

_TYPE_ERRORS = {"int_type": "is not an integer", "int_parsing": "is not an integer",
                "int_from_float": "is not an integer", "float_type": "is not a number",
                "float_parsing": "is not a number", "bool_type": "is not a boolean; use true or false",
                "bool_parsing": "is not a boolean; use true or false", "string_type": "is not a string"}


def _describe(errors: list[Any], data: Any) -> str:
    """The one line a user sees for a failed validation: the first problem, in the order a reader fixes them.

    Unknown sections first, then section by section (model, data, optim, run): unknown keys (all of the
    section's at once, with the valid ones), then wrong values in the order they were given, then what
    TRMConfig says of the combination; the checks across sections come last. Pydantic validates a nested
    section through its own `__init__`, so inside a TrainConfig a section's problem arrives already
    described, as the ConfigError that `_Section.__init__` raised.
    """
    order = list(_SECTIONS)

    def rank(err: Any) -> tuple[int, ...]:
        loc = err["loc"]
        if not loc or loc[0] not in _SECTIONS:
            return (0 if err["type"] == "extra_forbidden" else 2, 0, 0, 0)
        given = data.get(loc[0]) if isinstance(data, Mapping) else None
        keys = list(given) if isinstance(given, Mapping) else []
        position = keys.index(loc[1]) if len(loc) > 1 and loc[1] in keys else len(keys)
        kind = 0 if err["type"] == "extra_forbidden" else 1 if len(loc) > 1 else 2
        return (1, order.index(loc[0]), kind, position)

    errors = sorted(errors, key=rank)
    first = errors[0]
    loc, kind = first["loc"], first["type"]
    if kind == "extra_forbidden" and len(loc) == 1:
        names = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1)
        return f"unknown config section(s) {names}; valid sections: {sorted(_SECTIONS)}"
    if not loc:
        if kind == "value_error":
            return str(first["ctx"]["error"])
        return f"a config is a table of sections {sorted(_SECTIONS)}, got {first['input']!r}"
    section = str(loc[0])
    if len(loc) == 1:
        if kind == "value_error":
            error = first["ctx"]["error"]  # ConfigError: the section's own line; ValueError: TRMConfig's check
            return str(error) if isinstance(error, ConfigError) else f"[{section}]: {error}"
        return f"[{section}] must be a table of key = value pairs, got {first['input']!r}"
    key, value = f"{section}.{loc[1]}", first["input"]
    if kind == "extra_forbidden":
        bad = sorted(f"{section}.{e['loc'][1]}" for e in errors
                     if e["type"] == "extra_forbidden" and e["loc"][:1] == (section,) and len(e["loc"]) == 2)
        return f"unknown key(s) {bad}; valid keys in [{section}]: {sorted(_SECTIONS[section].model_fields)}"
    if kind == "literal_error":
        choices = typing.get_args(_SECTIONS[section].model_fields[str(loc[1])].annotation)
        return f"{key}={value!r} is not one of {list(choices)}"
    if kind in ("int_type", "int_parsing") and isinstance(value, bool):
        return f"{key}={value!r} is a boolean; expected an integer"
    if kind in _TYPE_ERRORS:
        return f"{key}={value!r} {_TYPE_ERRORS[kind]}"
    return f"{key}={value!r}: {first['msg']}"


# ---- TOML files and command-line overrides ------------------------------------------------------------
def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (leading `--` allowed) to a raw config dict; returns a new dict.

    Values stay strings here; `TrainConfig.from_dict` parses and type-checks them against the field.
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
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
        valid = _SECTIONS[section].model_fields
        if key not in valid:
            raise ConfigError(f"override {item!r}: unknown key {section}.{key}; valid keys in [{section}]: "
                              f"{sorted(valid)}")
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table of key = value pairs, got {table!r}")
        table[key] = value
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
    for name, section in _SECTIONS.items():
        for key, info in section.model_fields.items():
            typ = info.annotation
            tname = typ.__name__ if isinstance(typ, type) else str(typ).replace("typing.", "")
            lines.append(f"  --{name}.{key}={info.get_default(call_default_factory=True)!r}  ({tname})")
    return "\n".join(lines)
