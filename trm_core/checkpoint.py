"""Checkpoints: one self-describing safetensors file per model.

Layout (docs/ARCHITECTURE.md "Checkpoint format"): the model's state dict (float32; bfloat16 accepted on
load) and text metadata: `format` = "trm-serve/1", `config` = TRMConfig JSON, `task`, `train`
(JSON summary) and any extra keys the caller passes (JSON-encoded). Nothing executable travels with
the weights: safetensors holds tensors and strings only, and this module never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import TRMConfig
from .model import TRM

FORMAT = "trm-serve/1"
_RAW_KEYS = ("format", "task", "config")  # stored as plain text; every other key is JSON


class CheckpointFormatError(ValueError):
    """A file that is not a checkpoint this build can read; the message names the problem and the fix."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a checkpoint file: its identity (metrics, saved adaptation rows) without its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: TRM, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write `model` (weights, persistent buffers, config) to `path` as safetensors."""
    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items() if k not in _RAW_KEYS}
    if "task" in (metadata or {}) and metadata["task"] != model.config.task and model.config.task:
        raise ValueError(f"metadata task={metadata['task']!r} contradicts config task={model.config.task!r}")
    meta.update(format=FORMAT, config=model.config.to_json(),
                task=str((metadata or {}).get("task") or model.config.task))
    meta.setdefault("train", json.dumps({}))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a checkpoint, without loading its tensors."""
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
