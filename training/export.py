"""`trm export RUN -o model.safetensors [--recipe ...]`: a servable model file from a training run.

The file holds the EMA weights (the live ones with `--no-ema`, or when the run had no EMA) plus the
live buffers (the puzzle table is not EMA'd, as in the original), the config, and metadata:
`task`, `train` (a summary: data, steps, wall time, the optimizer settings, the last evaluation) and,
for ARC, `arc_tasks`: the table the ARC builder writes to `<data>/arc_tasks.json`, which the service
needs to map a task to its puzzle-embedding rows and to invert augmentations when voting.

`--recipe views=128,max_steps=16,halting=verified` writes the serving recipe the model card
recommends (metadata `recipe`; the web page and `trm solve` start from it). Given a model file
instead of a run directory, export copies it with the recipe set (`--recipe none` removes it) and
the weights untouched; `-o` may name the same file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from trm_core import TRM, save_checkpoint
from trm_core.checkpoint import RECIPE_FIELDS, Recipe, parse_recipe, rewrite_metadata

from .config import TrainConfig
from .run_state import CHECKPOINT_DIR, load_tensors, read_state

__all__ = ["export_run", "main", "parse_recipe_arg"]

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The run directory cannot be exported; the message names the missing piece."""


def _last_eval(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    last: dict[str, Any] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "eval":
                last = {k: v for k, v in rec.items() if k not in ("kind", "time")}
    return last


def parse_recipe_arg(text: str) -> Recipe | None:
    """`views=128,max_steps=16,halting=verified` (or a JSON object) -> Recipe; `none` -> None (remove).

    Raises ValueError naming the field (the checkpoint's own check, `parse_recipe`).
    """
    text = text.strip()
    if text.lower() == "none":
        return None
    if text.startswith("{"):
        return parse_recipe(json.loads(text))
    raw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise ValueError(f"recipe: {part!r} is not key=value (keys: {', '.join(RECIPE_FIELDS)})")
        value = value.strip()
        raw[key] = int(value) if key in ("views", "max_steps") and value.lstrip("-").isdigit() else value
    return parse_recipe(raw)


def export_run(run_dir: str | Path, out: str | Path, *, use_ema: bool = True,
               extra_train: dict[str, Any] | None = None, recipe: Recipe | None = None) -> dict[str, Any]:
    """Write the run's model to `out` (with the serving `recipe`, if given); returns the metadata written."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    cfg = TrainConfig.from_dict(state["config"])
    ckpt = run_dir / CHECKPOINT_DIR
    model = TRM(cfg.model)
    missing, unexpected = model.load_state_dict(load_tensors(ckpt / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ExportError(f"{ckpt / 'model.safetensors'} does not fit its config: missing {sorted(missing)}, "
                          f"unexpected {sorted(unexpected)}")
    ema_path = ckpt / "ema.safetensors"
    ema_used = use_ema and ema_path.is_file()
    if ema_used:
        params = dict(model.named_parameters())
        for name, t in load_tensors(ema_path).items():
            params[name].data.copy_(t)
    elif use_ema:
        log.warning("%s has no EMA weights (optim.ema=false); exporting the live weights", run_dir)
    train = {
        "data": cfg.data.path, "steps": state["step"], "wall_s": round(float(state["wall_s"]), 1),
        "world_size": state["world_size"], "global_batch_size": cfg.run.global_batch_size,
        "ema": ema_used, "ema_rate": cfg.optim.ema_rate if ema_used else None,
        "optimizer": cfg.optim.name, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay,
        "curriculum": {"reveal_start": cfg.data.reveal_start, "reveal_end": cfg.data.reveal_end,
                       "curriculum_steps": cfg.data.curriculum_steps, "augment": cfg.data.augment},
        "trainable_params": model.num_trainable_params(), "last_eval": _last_eval(run_dir),
        **(extra_train or {}),
    }
    metadata: dict[str, Any] = {"task": cfg.model.task, "train": train, "train_config": cfg.to_dict()}
    if recipe is not None:
        metadata["recipe"] = parse_recipe(recipe, cfg.model.task).to_dict()  # checked before the file is written
    if cfg.model.task == "arc":
        table = Path(cfg.data.path) / "arc_tasks.json"
        if not table.is_file():
            raise ExportError(f"ARC export needs {table} (written by the ARC dataset builder) to map tasks to "
                              "puzzle ids; rebuild the dataset or copy the file there")
        metadata["arc_tasks"] = json.loads(table.read_text())
    save_checkpoint(model, out, metadata=metadata)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trm export", description="Export a training run's (EMA) model "
                                     "to one self-describing .safetensors file, or set the serving recipe of "
                                     "a model file (weights untouched).")
    parser.add_argument("run", help="run directory (run.dir of `trm train`), or a .safetensors model file")
    parser.add_argument("-o", "--output", required=True, help="output .safetensors path (may be the input file)")
    parser.add_argument("--no-ema", action="store_true", help="export the live weights instead of the EMA")
    parser.add_argument("--recipe", metavar="views=N,max_steps=N,halting=MODE",
                        help="the model card's serving recipe, stored in the file for the web page and `trm "
                             "solve` (halting: learned, verified or fixed); `none` removes it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        recipe = parse_recipe_arg(args.recipe) if args.recipe is not None else None
        if Path(args.run).is_file():
            if args.recipe is None or args.no_ema:
                raise ValueError(f"{args.run} is a model file: only --recipe applies to it (`none` removes it)")
            meta = rewrite_metadata(args.run, args.output, {"recipe": recipe})
            summary = {"task": meta["task"]}
        else:
            meta = export_run(args.run, args.output, use_ema=not args.no_ema, recipe=recipe)
            summary = {"task": meta["task"], "steps": meta["train"]["steps"], "ema": meta["train"]["ema"]}
    except (OSError, ValueError, KeyError) as e:
        print(f"trm export: {e}", file=sys.stderr)  # noqa: T201 - CLI failure line
        return 2
    size = Path(args.output).stat().st_size
    recipe_out = meta.get("recipe")
    recipe_out = recipe_out.to_dict() if isinstance(recipe_out, Recipe) else recipe_out
    print(json.dumps({"output": str(args.output), "bytes": size, **summary,  # noqa: T201 - CLI output
                      "recipe": recipe_out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
