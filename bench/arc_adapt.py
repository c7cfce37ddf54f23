"""ARC test-time adaptation on CPU, measured: a small model trained on a subset of ARC-AGI-1
training tasks, then ARC-AGI-1 evaluation tasks it never saw, before and after adaptation.

Stages (each prints one JSON line; `all` runs them in order):
    python bench/arc_adapt.py select --out /work/runs/arc-cpu          # task folders (small grids)
    trm build-data arc --source /work/runs/arc-cpu --subsets train --test-set train \\
        --out /work/runs/arc-cpu/data --num-aug 15
    trm train arc-cpu --data.path=/work/runs/arc-cpu/data --run.dir=/work/runs/arc-cpu/run
    trm export /work/runs/arc-cpu/run -o /work/runs/arc-cpu/arc-cpu.safetensors
    python bench/arc_adapt.py measure --model /work/runs/arc-cpu/arc-cpu.safetensors \\
        --tasks /work/runs/arc-cpu/eval --steps 300
`measure` reports, per unseen task and in total: held-out demonstration accuracy and pass@2 on the
test pairs before adaptation (the task's rows start from the mean puzzle row, as a fresh row would)
and after, seconds per task, and the FLOPs of one adaptation (torch.utils.flop_counter over one
training step and one prediction step, times the steps run) with the GPU time they would take at a
stated sustained rate: an estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARC1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "arc" / "arc-agi-1"


def small_tasks(folder: Path, max_side: int, limit: int) -> list[Path]:
    """The first `limit` task files (sorted by name) whose every grid fits `max_side` x `max_side`."""
    out = []
    for path in sorted(folder.glob("*.json")):
        task = json.loads(path.read_text())
        grids = [g for pair in task["train"] + task["test"] for g in pair.values()]
        if max(max(len(g), len(g[0])) for g in grids) <= max_side:
            out.append(path)
            if len(out) == limit:
                break
    return out


def select(args: argparse.Namespace) -> dict:
    """Symlink the chosen training and evaluation tasks into <out>/train and <out>/eval."""
    out = Path(args.out)
    chosen = {"train": small_tasks(ARC1 / "training", args.max_side, args.num_train),
              "eval": small_tasks(ARC1 / "evaluation", args.max_side, args.num_eval)}
    for split, paths in chosen.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for p in paths:
            link = out / split / p.name
            if not link.exists():
                link.symlink_to(p)
    return {"stage": "select", **{split: [p.stem for p in paths] for split, paths in chosen.items()}}


def _pass2(attempts: list[list[Any]], outputs: list[Any]) -> float:
    return sum(o in a for o, a in zip(outputs, attempts, strict=True)) / len(outputs)


def flops_per_row_step(model, train: bool) -> float:
    """FLOPs of one ACT step for one row (torch.utils.flop_counter), with backward when `train`."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.adapt import adapted_copy

    clone = adapted_copy(model, 1, train_network=True)
    clone.train(train)
    B = 2
    inputs = torch.zeros(B, clone.config.seq_len, dtype=torch.long)
    carry = clone.reset_rows(clone.empty_carry(B), torch.ones(B, dtype=torch.bool), inputs,
                             torch.ones(B, dtype=torch.long))
    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(train):
            _, out = clone.step(carry)
            if train:
                out.logits.float().sum().backward()
    return counter.get_total_flops() / B


def measure(args: argparse.Namespace) -> dict:
    """Adapt to every task of --tasks; before/after numbers per task and in total, FLOPs, GPU estimate."""
    from training.adapt import AdaptConfig, adapt_task
    from trm_core import TRM, TRMConfig, load_checkpoint
    from trm_core.tasks import arc

    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.model)
    model.eval()
    known = set(meta.get("arc_tasks", {}))
    cfg = AdaptConfig(max_steps=args.steps, max_seconds=args.max_seconds, num_versions=args.versions,
                      batch_size=args.batch_size)
    rows, per_task = [], {}
    for path in sorted(Path(args.tasks).glob("*.json"))[:args.limit or None]:
        task = arc.parse_task(json.loads(path.read_text()))
        assert arc.task_fingerprint(task) not in known, f"{path.stem} is in the model's training table"
        t0 = time.perf_counter()
        res = adapt_task(model, task, cfg)
        total_s = time.perf_counter() - t0
        s = res.summary()
        rec = {"heldout_exact_before": s["heldout_exact_before"], "heldout_exact_after": s["heldout_exact"],
               "heldout_pass2_before": s["heldout_pass2_before"], "heldout_pass2_after": s["heldout_pass2"],
               "heldout_cells_before": s["heldout_cells_before"], "heldout_cells_after": s["heldout_cells"],
               "pass2_before": _pass2(res.before.attempts, task.test_outputs),
               "pass2_after": _pass2(res.after.attempts, task.test_outputs),
               "loss_first": round(s["loss_first"], 4), "loss_last": round(s["loss_last"], 4),
               "loss_first10": round(sum(res.losses[:10]) / len(res.losses[:10]), 4),
               "loss_last10": round(sum(res.losses[-10:]) / len(res.losses[-10:]), 4),
               "steps": s["steps"], "train_s": s["seconds"], "total_s": round(total_s, 2),
               # ACT row-steps run: training (batch x steps) and prediction (before and after: every
               # version x (test inputs + held-out pair) x halt_max_steps)
               "train_row_steps": s["steps"] * args.batch_size,
               "queries_per_version": len(task.test_inputs) + (res.heldout_index is not None)}
        per_task[path.stem] = rec
        rows.append(rec)
        print(json.dumps({"task": path.stem, **rec}), file=sys.stderr)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    # FLOPs: training rows x steps + the prediction pass (every version's test inputs and held-out pair,
    # halt_max_steps steps each); per row-step from the counter
    train_flops = flops_per_row_step(model, True)
    eval_flops = flops_per_row_step(model, False)
    halt = model.config.halt_max_steps
    queries = sum(r["queries_per_version"] for r in rows) / max(1, len(rows))
    ours = sum(r["train_row_steps"] * train_flops + 2 * args.versions * r["queries_per_version"] * halt * eval_flops
               for r in rows) / max(1, len(rows))
    paper_cfg = TRMConfig(hidden_size=512, num_heads=8, expansion=4.0, L_layers=2, H_cycles=3, L_cycles=4,
                          halt_max_steps=16, seq_len=900, vocab_size=12, puzzle_emb_ndim=512, puzzle_emb_len=16,
                          num_puzzle_identifiers=2, pos_encodings="rope", task="arc", grid_height=30, grid_width=30)
    paper = TRM(paper_cfg)
    paper_train, paper_eval = flops_per_row_step(paper, True), flops_per_row_step(paper, False)
    paper_task = (args.paper_steps * args.paper_batch * paper_train
                  + 2 * args.paper_versions * queries * 16 * paper_eval)
    rate = args.gpu_tflops * 1e12
    return {
        "stage": "measure", "model": str(args.model), "tasks": len(rows),
        "recipe": {"steps": args.steps, "versions": args.versions, "batch_size": args.batch_size,
                   "threads": args.threads},
        "mean": {k: mean(k) for k in ("heldout_exact_before", "heldout_exact_after", "heldout_pass2_before",
                                      "heldout_pass2_after", "heldout_cells_before", "heldout_cells_after",
                                      "pass2_before", "pass2_after", "loss_first10",
                                      "loss_last10", "train_s", "total_s")},
        "flops": {"this_model_train_row_step": train_flops, "this_model_eval_row_step": eval_flops,
                  "this_model_per_task": ours, "paper_model_train_row_step": paper_train,
                  "paper_model_eval_row_step": paper_eval, "paper_model_per_task": paper_task,
                  "paper_recipe": {"steps": args.paper_steps, "versions": args.paper_versions,
                                   "batch_size": args.paper_batch}},
        "gpu_estimate": {"assumed_sustained_tflops": args.gpu_tflops,
                         "this_model_s_per_task": round(ours / rate, 4),
                         "paper_model_s_per_task": round(paper_task / rate, 2),
                         "note": "estimate from counted FLOPs at an assumed sustained rate, not a GPU measurement"},
        "per_task": per_task,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("select")
    s.add_argument("--out", required=True)
    s.add_argument("--max-side", type=int, default=10)
    s.add_argument("--num-train", type=int, default=32)
    s.add_argument("--num-eval", type=int, default=12)
    m = sub.add_parser("measure")
    m.add_argument("--model", required=True)
    m.add_argument("--tasks", required=True, help="a folder of ARC task files with test outputs")
    m.add_argument("--limit", type=int, default=0, help="first N tasks (0: all)")
    m.add_argument("--steps", type=int, default=100)
    m.add_argument("--max-seconds", type=float, default=3600.0)
    m.add_argument("--versions", type=int, default=8)
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--gpu-tflops", type=float, default=100.0, help="assumed sustained GPU rate for the estimate")
    m.add_argument("--paper-steps", type=int, default=1000, help="recipe assumed for the paper-size estimate")
    m.add_argument("--paper-versions", type=int, default=64)
    m.add_argument("--paper-batch", type=int, default=256)
    args = p.parse_args(argv)
    result = {"select": select, "measure": measure}[args.stage](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
