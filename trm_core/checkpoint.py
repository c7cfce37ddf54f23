"""Checkpoints: one self-describing safetensors file per model.

Layout (docs/ARCHITECTURE.md "Checkpoint format"): the model's state dict (float32; bfloat16 accepted on
load) and text metadata: `format` = "trm-serve/1", `config` = TRMConfig JSON, `task`, `train`
(JSON summary) and any extra keys the caller passes (JSON-encoded). Nothing executable travels with
the weights: safetensors holds tensors and strings only, and this module never unpickles.

Files are written and read tensor by tensor in bounded chunks (`write_safetensors`,
`read_safetensors`) rather than with `safetensors.torch.save_file`/`get_tensor`, which hold a
second full copy of each tensor: a paper-size ARC puzzle table is 1.8-2.5 GB, and loading builds
the network around the file's table instead of allocating a table of zeros first.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .config import TRMConfig
from .model import TRM

FORMAT = "trm-serve/1"
_RAW_KEYS = ("format", "task", "config")  # stored as plain text; every other key is JSON
_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_FROM_CODE = {v: k for k, v in _DTYPES.items()}
_CHUNK_BYTES = 64 << 20  # per write/read call: bounded, and below Linux's 2 GiB limit for one read()


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
    write_safetensors(path, {k: v.detach() for k, v in model.state_dict().items()}, meta)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str],
                      *, float_dtype: torch.dtype | None = None) -> None:
    """A safetensors file written tensor by tensor, at most `_CHUNK_BYTES` converted at a time.

    A tensor may be memory-mapped (`torch.load(..., mmap=True)`): its bytes go from the mapping to
    the file without a second copy in memory. `float_dtype` converts floating tensors on the way.
    The file appears under its name only once complete.
    """
    header: dict[str, Any] = {}
    offset = 0
    plan = []
    for name in sorted(tensors):
        t = tensors[name]
        dtype = float_dtype if float_dtype is not None and t.is_floating_point() else t.dtype
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name}: dtype {dtype} cannot be stored")
        size = t.numel() * dtype.itemsize
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        plan.append((t, dtype))
        offset += size
    header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t, dtype in plan:
            flat = t.detach().reshape(-1)  # a view of a contiguous tensor
            step = max(1, _CHUNK_BYTES // max(dtype.itemsize, t.dtype.itemsize))
            for lo in range(0, flat.numel(), step):
                chunk = flat[lo:lo + step].to("cpu", dtype).contiguous()
                f.write(chunk.view(torch.uint8).numpy().data)
    os.replace(tmp, path)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each read straight into its own memory (no second copy)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            base = 8 + n
            out = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                buf = torch.empty(end - begin, dtype=torch.uint8)
                view = memoryview(buf.numpy())
                f.seek(base + begin)
                done = 0
                while done < len(view):
                    got = f.readinto(view[done:done + _CHUNK_BYTES])
                    if not got:
                        raise CheckpointFormatError(f"{path}: tensor {name} is cut short (file truncated?)")
                    done += got
                out[name] = buf.view(_FROM_CODE[info["dtype"]]).reshape(info["shape"])
    except (struct.error, json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, CheckpointFormatError):
            raise
        raise CheckpointFormatError(f"{path}: unreadable safetensors tensor data ({type(e).__name__}: {e})") from e
    return out


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
    The puzzle table is the tensor read from the file (no zero table is allocated beside it).
    """
    meta = read_metadata(path)
    config: TRMConfig = meta["config"]
    found = read_safetensors(path)
    model = _model_around_table(config, found.get("puzzle_emb.weights"))
    load_state_dict_strict(model, found, source=str(path))
    return model.to(device).eval(), meta


def _model_around_table(config: TRMConfig, table: torch.Tensor | None) -> TRM:
    """TRM(config), taking `table` as its puzzle table when it has the config's shape."""
    if config.puzzle_emb_ndim <= 0 or table is None or \
            tuple(table.shape) != (config.num_puzzle_identifiers, config.puzzle_emb_ndim):
        return TRM(config)  # the strict load below names whatever does not fit
    model = TRM(config.replace(num_puzzle_identifiers=1))
    model.config = config
    assert model.puzzle_emb is not None
    model.puzzle_emb.weights = table.float()  # the file's tensor itself when it is float32
    return model


def check_state_shapes(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor],
                       source: str) -> None:
    """One CheckpointFormatError naming every missing, unexpected and mis-shaped key, if any."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(f"{k} {tuple(tensors[k].shape)} (expected {tuple(expected[k])})"
                       for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    problems = [f"{name}: {', '.join(keys)}" for name, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if keys]
    if problems:
        raise CheckpointFormatError(f"{source} does not match its config: " + "; ".join(problems))


def load_state_dict_strict(model: TRM, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load `tensors` into `model`, reporting all missing, unexpected and mis-shaped keys in one error."""
    expected = model.state_dict()
    check_state_shapes({k: tuple(v.shape) for k, v in expected.items()}, tensors, source)
    bad_dtype = sorted(k for k, v in tensors.items() if v.dtype not in (torch.float32, torch.bfloat16))
    if bad_dtype:
        raise CheckpointFormatError(f"{source}: tensors must be float32 or bfloat16; got others for {bad_dtype}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
