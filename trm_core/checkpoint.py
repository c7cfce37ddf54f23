"""Checkpoints: one self-describing safetensors file per model.

Layout (docs/ARCHITECTURE.md "Checkpoint format"): the model's state dict (float32; bfloat16 accepted on
load) and text metadata: `format` = "trm-serve/1", `config` = TRMConfig JSON, `task`, `train`
(JSON summary), optionally `recipe` (the serving recipe the model card recommends, `Recipe`) and any
extra keys the caller passes (JSON-encoded). Nothing executable travels with the weights: safetensors
holds tensors and strings only, and this module never unpickles.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .config import TRMConfig
from .halting import HALTING_MODES
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
    tensors = read_safetensors(src)
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
    write_safetensors(tmp, tensors, raw)
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
