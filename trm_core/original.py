"""Import checkpoints written by the original TRM code (SamsungSAILMontreal/TinyRecursiveModels).

The original `pretrain.py` saves `torch.save(model.state_dict())` of the compiled loss head, so keys
read `_orig_mod.model.inner.<name>`, and keeps the architecture in `all_config.yaml` (`arch:`) while
seq_len / vocab_size / num_puzzle_identifiers live in the dataset's `dataset.json`. This module maps
those names onto ours explicitly (no silent prefix stripping elsewhere) and infers from the tensor
shapes whatever they determine, refusing a config that contradicts them.

Layouts met in the wild, all read with `torch.load(weights_only=True)` only (nothing unpickled):
the raw `step_N` file `pretrain.py` writes (no extension) beside its `all_config.yaml`; keys with
or without `_orig_mod.` (torch.compile) and `module.` (DDP); the EMA model's state dict (what
`pretrain.py` saves with `ema: True`); a run trained with AdamW instead of AdamATan2 (same
weights); and a training state wrapped in a dict (`{"model": ..., "optimizer": ..., "step": N}`,
or `{"ema": ...}`), whose weights are taken and the rest ignored. `convert_original_file` streams
a paper-size puzzle table from the memory-mapped file to safetensors without a second copy.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint import FORMAT, CheckpointFormatError, check_state_shapes, load_state_dict_strict, write_safetensors
from .config import TRMConfig
from .model import TRM

logger = logging.getLogger(__name__)

_WRAPPERS = ("_orig_mod.", "module.")  # torch.compile, DDP: any order, any number
_PREFIXES = ("model.inner.", "inner.")
# keys of a saved training state that hold the model's weights, preferred first (EMA is what the
# original evaluates and saves)
_STATE_KEYS = ("ema", "ema_state_dict", "ema_model", "model", "model_state_dict", "state_dict", "weights")
_RENAMES = [  # original name (after the prefix) -> ours
    (r"^embed_tokens\.embedding_weight$", "embed_tokens.weight"),
    (r"^embed_pos\.embedding_weight$", "pos_embed.weight"),
    (r"^L_level\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$", r"layers.\1.attn.qkv.weight"),
    (r"^L_level\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"layers.\1.attn.o.weight"),
    (r"^L_level\.layers\.(\d+)\.(mlp_t|mlp)\.gate_up_proj\.weight$", r"layers.\1.\2.gate_up.weight"),
    (r"^L_level\.layers\.(\d+)\.(mlp_t|mlp)\.down_proj\.weight$", r"layers.\1.\2.down.weight"),
    (r"^(H_init|L_init|lm_head\.weight|q_head\.weight|q_head\.bias|puzzle_emb\.weights)$", r"\1"),
]
# Original arch fields that do not change inference (training-only, or bookkeeping).
_IGNORED = {"name", "loss", "H_layers", "forward_dtype", "halt_exploration_prob", "no_ACT_continue",
            "batch_size", "puzzle_emb_lr"}
# Defaults of the original pydantic config class for fields a config may omit.
_ORIGINAL_DEFAULTS = {"puzzle_emb_len": 16, "mlp_t": False, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                      "expansion": 4.0, "L_layers": 2}
_REQUIRED = ("num_heads", "H_cycles", "L_cycles", "halt_max_steps")


def rename_original_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original key names -> ours; unknown keys raise, naming them."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        name = key
        while name.startswith(_WRAPPERS):
            name = name.split(".", 1)[1]
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        for pattern, repl in _RENAMES:
            if re.match(pattern, name):
                out[re.sub(pattern, repl, name)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointFormatError(f"not a TRM checkpoint of the original code: unknown keys {sorted(unknown)}")
    return out


def infer_config(tensors: dict[str, torch.Tensor], original_config: dict[str, Any]) -> TRMConfig:
    """A TRMConfig from the original arch fields, with every shape-determined field taken from the tensors."""
    cfg = {k: v for k, v in original_config.items() if k not in _IGNORED}
    name = original_config.get("name", "")
    if name and "trm@" not in str(name):
        raise CheckpointFormatError(f"arch.name={name!r} is not the TRM model (recursive_reasoning.trm@...)")
    for key, value in _ORIGINAL_DEFAULTS.items():
        cfg.setdefault(key, value)
    if "embed_tokens.weight" not in tensors:
        raise CheckpointFormatError("original checkpoint lacks embed_tokens: is it a TRM state dict?")
    if "H_init" not in tensors:
        raise CheckpointFormatError("original checkpoint lacks the H_init/L_init buffers (and the puzzle table): an "
                                    "EMA helper's shadow dict holds only the trained parameters; convert the "
                                    "step_N file the run saved (with ema: True it is the EMA model's full state)")
    layer_ids = {int(k.split(".")[1]) for k in tensors if k.startswith("layers.")}
    inferred: dict[str, Any] = {
        "hidden_size": tensors["H_init"].shape[0],
        "vocab_size": tensors["embed_tokens.weight"].shape[0],
        "L_layers": len(layer_ids),
        "mlp_t": "layers.0.mlp_t.gate_up.weight" in tensors,
    }
    if "puzzle_emb.weights" in tensors:
        inferred["num_puzzle_identifiers"], inferred["puzzle_emb_ndim"] = tensors["puzzle_emb.weights"].shape
    else:
        inferred["puzzle_emb_ndim"] = 0
        cfg.setdefault("num_puzzle_identifiers", 1)
    if "pos_embed.weight" in tensors:
        inferred["pos_encodings"] = "learned"
    elif cfg.get("pos_encodings") == "learned":
        raise CheckpointFormatError("config says pos_encodings=learned but the checkpoint has no embed_pos table")
    cfg.setdefault("pos_encodings", "rope")
    hidden, ndim = inferred["hidden_size"], inferred["puzzle_emb_ndim"]
    plen = cfg["puzzle_emb_len"] or -(-ndim // hidden)
    total = None
    if "pos_embed.weight" in tensors:
        total = tensors["pos_embed.weight"].shape[0]
    elif inferred["mlp_t"]:
        total = tensors["layers.0.mlp_t.gate_up.weight"].shape[1]
    if total is not None:
        inferred["seq_len"] = total - plen
    for key, value in inferred.items():
        given = cfg.get(key)
        if given is not None and given != value:
            raise CheckpointFormatError(f"config says {key}={given!r} but the checkpoint's tensors imply {value!r}")
        cfg[key] = value
    missing = [k for k in (*_REQUIRED, "seq_len") if k not in cfg]
    if missing:
        raise CheckpointFormatError(f"cannot determine {missing} from the checkpoint; pass them "
                                    f"(all_config.yaml arch section, dataset.json, or key=value overrides)")
    fields = set(TRMConfig.__dataclass_fields__)
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise CheckpointFormatError(f"original config fields {unknown} are not understood by this build")
    return TRMConfig(**cfg)


def import_original(state_dict: dict[str, torch.Tensor], original_config: dict[str, Any]) -> TRM:
    """The original code's checkpoint -> TRM (float32, eval mode).

    Args:
        state_dict: as the original pretrain.py saves it (keys `_orig_mod.model.inner.*`), e.g. from
            `torch.load(path, weights_only=True)`; bfloat16 buffers are converted.
        original_config: the original arch fields (hidden_size, mlp_t, H_cycles, ...) plus seq_len,
            vocab_size, num_puzzle_identifiers when known; task metadata keys of TRMConfig are accepted.
    """
    tensors = rename_original_keys(state_dict)
    config = infer_config(tensors, original_config)
    model = TRM(config)
    load_state_dict_strict(model, {k: v.float() for k, v in tensors.items()}, source="original checkpoint")
    return model.eval()


def _unwrap(state: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensor state dict inside what torch.load returned (see the module docstring)."""
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    if isinstance(state, dict):
        for key in _STATE_KEYS:
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                logger.info("%s: taking the weights under %r (ignoring %s)", path, key,
                            sorted(str(k) for k in state if k != key))
                return inner
    raise CheckpointFormatError(f"{path} does not hold a state dict of tensors (nor one under "
                                f"{'/'.join(_STATE_KEYS)})")


def load_original_file(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read an original checkpoint (`step_N`, `.pt`, ...) without executing code (weights_only=True).

    `mmap=True` maps the file instead of reading it (a multi-GB puzzle table stays on disk until
    used); files in torch's legacy (pre-zip) format cannot be mapped and are read whole.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not mmap or "mmap" not in str(e):
                raise
            logger.warning("%s cannot be memory-mapped (%s); reading it whole", path, e)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for non-weight content
        raise CheckpointFormatError(f"{path} is not a plain tensor state dict ({type(e).__name__}: {e}); "
                                    f"only weights_only checkpoints are accepted") from e
    return _unwrap(state, path)


def find_run_config(checkpoint: str | os.PathLike) -> Path:
    """The `all_config.yaml` the original run wrote into its checkpoint folder, beside `step_N`."""
    path = Path(checkpoint).parent / "all_config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no all_config.yaml beside {checkpoint}; pass --config with the file the "
                                f"original run wrote into its checkpoint folder")
    return path


def _expected_shapes(config: TRMConfig) -> dict[str, tuple[int, ...]]:
    """Our state dict's shapes for `config`, without allocating its puzzle table."""
    shapes = {k: tuple(v.shape) for k, v in TRM(config.replace(num_puzzle_identifiers=1)).state_dict().items()}
    if "puzzle_emb.weights" in shapes:
        shapes["puzzle_emb.weights"] = (config.num_puzzle_identifiers, config.puzzle_emb_ndim)
    return shapes


def check_shapes(tensors: dict[str, torch.Tensor], config: TRMConfig, source: str) -> None:
    """`load_state_dict_strict`'s checks (names, shapes, dtypes) without building the model."""
    check_state_shapes(_expected_shapes(config), tensors, source)
    bad = sorted(k for k, v in tensors.items() if v.dtype not in (torch.float32, torch.bfloat16, torch.float16))
    if bad:
        raise CheckpointFormatError(f"{source}: tensors must be floating point; got others for {bad}")


def convert_original_file(checkpoint: str | os.PathLike, output: str | os.PathLike, original_config: dict[str, Any],
                          metadata: dict[str, Any] | None = None) -> TRMConfig:
    """An original checkpoint file -> a trm-serve safetensors checkpoint, streamed.

    The file is memory-mapped and each tensor written as float32 in bounded chunks, so peak memory
    stays near one copy of the largest tensor's pages instead of two or three (a 2.5 GB ARC table).
    `original_config` as for `import_original`; `metadata` as for `save_checkpoint`.
    """
    state = load_original_file(checkpoint, mmap=True)
    tensors = rename_original_keys(state)
    config = infer_config(tensors, original_config)
    check_shapes(tensors, config, f"original checkpoint {checkpoint}")
    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()
            if k not in ("format", "task", "config")}
    meta.update(format=FORMAT, config=config.to_json(), task=str(config.task))
    meta.setdefault("train", json.dumps({}))
    write_safetensors(output, tensors, meta, float_dtype=torch.float32)
    return config
