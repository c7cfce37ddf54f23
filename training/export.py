"""`trm export RUN -o model.safetensors`: a servable model file from a training run.

The file holds the EMA weights (the live ones with `--no-ema`, or when the run had no EMA) plus the
live buffers (the puzzle table is not EMA'd, as in the original), the config, and metadata:
`task`, `train` (a summary: data, steps, wall time, the optimizer settings, the last evaluation) and,
for ARC, `arc_tasks`: the table the ARC builder writes to `<data>/arc_tasks.json`, which the service
needs to map a task to its puzzle-embedding rows and to invert augmentations when voting.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from trm_core import TRM, save_checkpoint

from .config import TrainConfig
from .run_state import CHECKPOINT_DIR, load_tensors, read_state

__all__ = ["export_run", "main"]

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


def export_run(run_dir: str | Path, out: str | Path, *, use_ema: bool = True,
               extra_train: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the run's model to `out`; returns the metadata written."""
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
                                     "to one self-describing .safetensors file.")
    parser.add_argument("run", help="run directory (run.dir of `trm train`)")
    parser.add_argument("-o", "--output", required=True, help="output .safetensors path")
    parser.add_argument("--no-ema", action="store_true", help="export the live weights instead of the EMA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        meta = export_run(args.run, args.output, use_ema=not args.no_ema)
    except (OSError, ValueError, KeyError) as e:
        print(f"trm export: {e}", file=sys.stderr)  # noqa: T201 - CLI failure line
        return 2
    size = Path(args.output).stat().st_size
    print(json.dumps({"output": str(args.output), "bytes": size, "task": meta["task"],  # noqa: T201 - CLI output
                      "steps": meta["train"]["steps"], "ema": meta["train"]["ema"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
