"""How much training compute is a run, and what would the paper's Sudoku run cost on this machine?

The bundled Sudoku model solves about 3% of hard puzzles as posted; the paper's 87% model got far
more training. This puts a number on "far more": for each config it counts the matmul FLOPs of one
real optimizer step (`Trainer.train_step`: refill, one ACT step with the 1-step gradient, loss,
backward, optimizer) with `torch.utils.flop_counter.FlopCounterMode`, scales them to the config's
global batch (a step's FLOPs are linear in the batch), and multiplies by the run's steps:

- `bundled`: the bundled model's own run, its config and step count read from the file's metadata;
- `hidden128`: the same config at hidden 128 (the width trial of the campaign), per step only;
- `paper`: `training/configs/sudoku-mlp.toml` (5.0M parameters, batch 768, H3/L6), 50,000 epochs over
  the paper's 1,000 puzzle groups (an epoch draws one of each group's 1,001 versions) = 65,104 steps.

It also times real steps on this CPU (the bundled config at its own batch; the paper config at a small
batch) and projects the paper run's CPU time from the achieved FLOP/s. FLOPs are exact; times depend
on the load of the machine (the load average is printed beside them).

    python bench/train_compute.py --threads 1        # about a minute on an idle 2-core CPU

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.config import TrainConfig, load_config  # noqa: E402
from training.ddp import DistInfo  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from trm_core.checkpoint import read_metadata  # noqa: E402

BUNDLED = ROOT / "trm_core" / "pretrained" / "sudoku.safetensors"
SUDOKU_CSV = ROOT.parent / "shared" / "data" / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"
PAPER_GROUPS = 1_000  # the paper's Sudoku build: 1,000 puzzles, each a group of 1 + 1,000 augmented versions


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trainer_for(cfg: TrainConfig, batch: int, run_dir: str, data: str) -> Trainer:
    """A real trainer on `data` at global batch `batch` (everything else as configured)."""
    cfg = TrainConfig.model_validate({**cfg.to_dict(), "data": {**cfg.data.model_dump(), "path": data,
                                                                 "eval_path": "", "holdout": 0, "train_limit": 64},
                                      "run": {**cfg.run.model_dump(), "global_batch_size": batch, "dir": run_dir,
                                              "init_from": "", "tensorboard": False, "progress": False,
                                              "max_steps": 1_000_000}})
    return Trainer(cfg, DistInfo())


def paper_steps(cfg: TrainConfig) -> int:
    """The paper run's optimizer steps as the trainer counts an epoch budget (one example per group per
    epoch), for the paper's 1,000 groups; its built data set is not needed to count them."""
    return int(cfg.run.epochs * PAPER_GROUPS / cfg.run.global_batch_size)


def flops_per_step(cfg: TrainConfig, count_batch: int, data: str) -> tuple[float, int]:
    """Matmul FLOPs of one optimizer step at the config's batch, from a count at `count_batch`."""
    with tempfile.TemporaryDirectory() as d:
        trainer = trainer_for(cfg, count_batch, d, data)
        params = trainer.model.num_trainable_params()
        with FlopCounterMode(display=False) as counter:
            trainer.train_step()
    return counter.get_total_flops() * cfg.run.global_batch_size / count_batch, params


def seconds_per_step(cfg: TrainConfig, batch: int, steps: int, data: str) -> float:
    """Median wall time of `steps` real optimizer steps at `batch` (after two warm-up steps)."""
    with tempfile.TemporaryDirectory() as d:
        trainer = trainer_for(cfg, batch, d, data)
        for _ in range(2):
            trainer.train_step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-steps", type=int, default=5, help="timed steps per measurement (median)")
    ap.add_argument("--paper-time-batch", type=int, default=8, help="batch at which a paper-size step is timed")
    ap.add_argument("--data", default=str(SUDOKU_CSV), help="a raw Sudoku CSV to draw the steps' puzzles from")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    meta = read_metadata(BUNDLED)
    train = meta["train"]
    bundled = TrainConfig.model_validate(meta["train_config"])
    wide = TrainConfig.model_validate(
        {**bundled.to_dict(), "model": {**bundled.model.to_dict(), "hidden_size": 128, "puzzle_emb_ndim": 128}})
    paper = load_config("sudoku-mlp")

    out: dict[str, Any] = {"threads": args.threads, "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    rows: dict[str, dict[str, Any]] = {}
    for name, cfg, steps in (("bundled", bundled, int(train["steps"])), ("hidden128", wide, None),
                             ("paper", paper, paper_steps(paper))):
        log(f"{name}: counting one step")
        flops, params = flops_per_step(cfg, min(8, cfg.run.global_batch_size), args.data)
        row = {"params": params, "global_batch": cfg.run.global_batch_size, "flops_per_step": flops}
        if steps is not None:
            row.update(steps=steps, total_flops=flops * steps)
        rows[name] = row

    log("timing the bundled config at its own batch")
    b = rows["bundled"]
    b["s_per_step"] = seconds_per_step(bundled, bundled.run.global_batch_size, args.time_steps, args.data)
    b["achieved_gflops"] = b["flops_per_step"] / b["s_per_step"] / 1e9
    b["recorded_wall_s"] = train.get("wall_s")
    log(f"timing the paper config at batch {args.paper_time_batch}")
    p = rows["paper"]
    t = seconds_per_step(paper, args.paper_time_batch, args.time_steps, args.data)
    p["achieved_gflops"] = p["flops_per_step"] * args.paper_time_batch / paper.run.global_batch_size / t / 1e9
    p["projected_cpu_days"] = p["total_flops"] / (p["achieved_gflops"] * 1e9) / 86400
    rows["hidden128"]["flops_per_step_vs_bundled"] = rows["hidden128"]["flops_per_step"] / b["flops_per_step"]
    out.update(rows)
    out["paper_vs_bundled"] = {"flops_per_step": p["flops_per_step"] / b["flops_per_step"],
                               "total_flops": p["total_flops"] / b["total_flops"]}
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
