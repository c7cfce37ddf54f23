"""Import checkpoints written by the original TRM code (SamsungSAILMontreal/TinyRecursiveModels).

The original `pretrain.py` saves `torch.save(model.state_dict())` of the compiled loss head, so keys
read `_orig_mod.model.inner.<name>`, and keeps the architecture in `all_config.yaml` (`arch:`) while
seq_len / vocab_size / num_puzzle_identifiers live in the dataset's `dataset.json`. This module maps
those names onto ours explicitly (no silent prefix stripping elsewhere) and infers from the tensor
shapes whatever they determine, refusing a config that contradicts them.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from .checkpoint import CheckpointFormatError, load_state_dict_strict
from .config import TRMConfig
from .model import TRM

_PREFIXES = ("_orig_mod.model.inner.", "model.inner.", "inner.")
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
    if "H_init" not in tensors or "embed_tokens.weight" not in tensors:
        raise CheckpointFormatError("original checkpoint lacks H_init or embed_tokens: is it a TRM state dict?")
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


def load_original_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original `.pt` checkpoint without executing code (weights_only=True)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for non-weight content
        raise CheckpointFormatError(f"{path} is not a plain tensor state dict ({type(e).__name__}: {e}); "
                                    f"only weights_only checkpoints are accepted") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{path} does not hold a state dict of tensors")
    return state
