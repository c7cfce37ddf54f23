"""Checkpoints: one self-describing safetensors file per model.

Layout (docs/ARCHITECTURE.md "Checkpoint format"): the model's state dict (float32; bfloat16 accepted on
load) and text metadata: `format` = "trm-serve/1", `config` = TRMConfig JSON, `task`, `train`
(JSON summary), optionally `recipe` (the serving recipe the model card recommends, `Recipe`) and any
extra keys the caller passes (JSON-encoded). Nothing executable travels with the weights: safetensors
holds tensors and strings only, and this module never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import TRMConfig
from .halting import HALTING_MODES
from .model import TRM

FORMAT = "trm-serve/1"
_RAW_KEYS = ("format", "task", "config")  # stored as plain text; every other key is JSON


class CheckpointFormatError(ValueError):
    """A file that is not a checkpoint this build can read; the message names the problem and the fix."""


@dataclass(frozen=True)
class Recipe:
    """How the model card says to run this model for its best answers: `views` symmetric versions per
    puzzle, at most `max_steps` ACT steps each, `halting` mode. It travels with the weights so that the
    web page and `trm solve` can start from it; the HTTP API's defaults stay the paper's (one view)."""

    views: int
    max_steps: int
    halting: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """"128 views, 16 steps, verified halting" (the web page and `trm solve` say it so)."""
        return (f"{self.views} view{'s' if self.views != 1 else ''}, {self.max_steps} "
                f"step{'s' if self.max_steps != 1 else ''}, {self.halting} halting")


RECIPE_FIELDS = ("views", "max_steps", "halting")


def parse_recipe(raw: Any, task: str | None = None) -> Recipe:
    """A `Recipe` from its JSON form ({"views": int, "max_steps": int, "halting": mode}) or a Recipe.

    Raises ValueError naming the field: a missing or unknown key, a non-integer or < 1 count, a halting
    mode that does not exist, views for a task without views (ARC) or verified halting for a task with
    no rule check (ARC).
    """
    if isinstance(raw, Recipe):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise ValueError(f"recipe must be an object with {', '.join(RECIPE_FIELDS)}; got {raw!r}")
    missing = [k for k in RECIPE_FIELDS if k not in raw]
    unknown = sorted(set(raw) - set(RECIPE_FIELDS))
    problems = [f"{what} {', '.join(keys)}" for what, keys in (("missing", missing), ("unknown", unknown)) if keys]
    if problems:
        raise ValueError(f"recipe: {'; '.join(problems)} (a recipe has {', '.join(RECIPE_FIELDS)})")
    for key in ("views", "max_steps"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"recipe.{key} must be an integer >= 1; got {value!r}")
    if raw["halting"] not in HALTING_MODES:
        raise ValueError(f"recipe.halting must be one of {', '.join(HALTING_MODES)}; got {raw['halting']!r}")
    if task == "arc" and raw["halting"] == "verified":
        raise ValueError("recipe.halting: verified needs a rule check, which ARC does not have; use learned or fixed")
    if task == "arc" and raw["views"] != 1:
        raise ValueError("recipe.views: ARC runs its trained versions, not views; use views 1")
    return Recipe(views=raw["views"], max_steps=raw["max_steps"], halting=raw["halting"])


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a checkpoint file: its identity (metrics, saved adaptation rows) without its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: TRM, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write `model` (weights, persistent buffers, config) to `path` as safetensors.

    A `recipe` entry (a `Recipe` or its JSON form) is checked first: a bad one raises ValueError
    naming the field and writes nothing.
    """
    metadata = dict(metadata or {})
    if "task" in metadata and metadata["task"] != model.config.task and model.config.task:
        raise ValueError(f"metadata task={metadata['task']!r} contradicts config task={model.config.task!r}")
    if metadata.get("recipe") is not None:
        metadata["recipe"] = parse_recipe(metadata["recipe"], metadata.get("task") or model.config.task).to_dict()
    else:
        metadata.pop("recipe", None)
    meta = {k: json.dumps(v, sort_keys=True) for k, v in metadata.items() if k not in _RAW_KEYS}
    meta.update(format=FORMAT, config=model.config.to_json(),
                task=str(metadata.get("task") or model.config.task))
    meta.setdefault("train", json.dumps({}))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a checkpoint, without loading its tensors.

    `config` comes back as a TRMConfig and `recipe`, when the file has one, as a `Recipe`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointFormatError(f"{path} is not a safetensors file ({e}); "
                                    f"for an original TRM checkpoint use `trm convert-original`") from e
    fmt = raw.get("format")
    if fmt != FORMAT:
        raise CheckpointFormatError(f"{path} is format {fmt!r}; this build reads {FORMAT}")
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _RAW_KEYS:
            meta[k] = v
            continue
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError as e:
            raise CheckpointFormatError(f"{path}: metadata key {k!r} is not valid JSON ({e})") from e
    try:
        meta["config"] = TRMConfig.from_json(raw.get("config", ""))
    except (ValueError, TypeError) as e:
        raise CheckpointFormatError(f"{path}: metadata 'config' is not a valid TRMConfig: {e}") from e
    if "recipe" in meta:
        try:
            meta["recipe"] = parse_recipe(meta["recipe"], meta.get("task") or meta["config"].task)
        except ValueError as e:
            raise CheckpointFormatError(f"{path}: metadata {e}; rewrite it with "
                                        "`trm export FILE -o FILE --recipe views=N,max_steps=N,halting=MODE`") from e
    return meta


def rewrite_metadata(src: str | os.PathLike, dst: str | os.PathLike, updates: dict[str, Any]) -> dict[str, Any]:
    """Copy checkpoint `src` to `dst` (which may be `src`) with metadata entries replaced (value None:
    removed), tensors unchanged. The result is checked as `read_metadata` checks any file, before
    `dst` is replaced. Returns the new file's metadata."""
    read_metadata(src)  # a file this build reads, before anything is written
    src, dst = Path(src), Path(dst)
    with safe_open(str(src), framework="pt") as f:
        raw = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    task = raw.get("task") or TRMConfig.from_json(raw["config"]).task
    for key, value in updates.items():
        if key in _RAW_KEYS:
            raise ValueError(f"metadata {key!r} describes the weights and cannot be rewritten")
        if value is None:
            raw.pop(key, None)
            continue
        if key == "recipe":
            value = parse_recipe(value, task).to_dict()
        raw[key] = json.dumps(value, sort_keys=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata=raw)
    try:
        meta = read_metadata(tmp)
    except CheckpointFormatError:
        tmp.unlink()
        raise
    os.replace(tmp, dst)
    return meta


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[TRM, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights strictly.

    Returns (model in eval mode on `device`, metadata with `config` as a TRMConfig).
    Raises FileNotFoundError or CheckpointFormatError with one line naming every problem.
    """
    meta = read_metadata(path)
    config: TRMConfig = meta["config"]
    model = TRM(config)
    with safe_open(str(path), framework="pt") as f:
        found = {k: f.get_tensor(k) for k in f.keys()}
    load_state_dict_strict(model, found, source=str(path))
    return model.to(device).eval(), meta


def load_state_dict_strict(model: TRM, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load `tensors` into `model`, reporting all missing, unexpected and mis-shaped keys in one error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(f"{k} {tuple(tensors[k].shape)} (expected {tuple(expected[k].shape)})"
                       for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    problems = [f"{name}: {', '.join(keys)}" for name, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if keys]
    if problems:
        raise CheckpointFormatError(f"{source} does not match its config: " + "; ".join(problems))
    bad_dtype = sorted(k for k, v in tensors.items() if v.dtype not in (torch.float32, torch.bfloat16))
    if bad_dtype:
        raise CheckpointFormatError(f"{source}: tensors must be float32 or bfloat16; got others for {bad_dtype}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
