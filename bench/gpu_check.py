"""One command for a first run on a GPU host: do the CUDA paths give the right answers, how fast is a
step per row bucket, and what does the service deliver end to end? Prints ONE JSON object.

    python bench/gpu_check.py                        # on the GPU (at most ~8 minutes on one GPU)
    python bench/gpu_check.py --device cpu --quick   # the same code paths on a CPU, scaled down (CI)

Three sections (docs/gpu-check.md says how to read them):

- `parity`: the bundled Sudoku model on real puzzles (512; `--data`, default the forum-hardest test
  file beside the checkout, else the examples bundled with the web page), every row run to the
  fixed step budget three ways: float32 on the CPU (the model card's numbers), the serving copy
  eagerly on the device (bfloat16 on CUDA), and the serving stepper (CUDA graphs per row bucket,
  after their start-up self-check). Answers are compared row by row; rows that differ are listed
  with their bf16 margin (the gap between the two largest logits at the differing cells: a small
  gap means a near-tie that round-off can flip).
- `throughput`: row-steps/s per row bucket (1 to 1024; `--quick`: to 64), CUDA graphs and eager,
  for the bundled model and random-weight `sudoku-mlp` and `arc-att` presets; GFLOP/s from counted
  FLOPs, and the fraction of the device's peak bf16 rate where the device is in `PEAK_BF16_TFLOPS`.
- `http`: `python -m service` (= `trm serve`) started as a subprocess on loopback with the bundled
  model at 64/256/1024 slots (`--quick`: 4 and 16), a closed loop of as many clients as slots:
  puzzles/s, p50/p99 latency, and what the server reports about its CUDA graphs and device.

Progress goes to stderr. Sections that fail record their error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import json
import math
import os
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.engine.stepper import BucketedStep, EagerStep, prepare_model, row_buckets  # noqa: E402
from trm_core import TRM, TRMConfig, load_checkpoint  # noqa: E402
from trm_core.tasks import sudoku  # noqa: E402
from trm_core.tasks.puzzle_csv import read_puzzle_csv  # noqa: E402


def _sibling(name: str):
    """Another bench script as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


model_bench = _sibling("model")
serve_bench = _sibling("serve")
log = serve_bench.log

BUNDLED = serve_bench.BUNDLED
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sudoku" / "forum_hardest_1905_11plus_test.csv.gz"
EXAMPLES = ROOT / "service" / "api" / "static" / "sudoku-examples.json"

# Peak dense bf16 tensor throughput (TFLOP/s, FP32 accumulate, no sparsity) from the vendors' data
# sheets, matched against torch.cuda.get_device_name. First match wins (PCIe before the SXM default).
PEAK_BF16_TFLOPS: list[tuple[str, float | None]] = [
    (r"H100.*PCIe", 756.0),
    (r"H100", 989.4),  # SXM
    (r"A100", 312.0),
    (r"\bL4\b", 121.0),
    (r"A10G", None),  # AWS's A10 variant: no published bf16 figure; pass --peak-tflops
    (r"\bA10\b", 125.0),
    (r"RTX 4090", 165.2),
    (r"\bT4\b", 8.1),  # no bf16 tensor cores: bf16 runs at about the fp32 rate (its fp16 tensor peak is 65)
]


def peak_tflops(device_name: str) -> float | None:
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device, peak_override: float | None) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        extra = {"memory_gb": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                 "bf16_supported": torch.cuda.is_bf16_supported()}
    else:
        name, extra = platform.processor() or platform.machine(), {"threads": torch.get_num_threads()}
    peak = peak_override if peak_override is not None else (peak_tflops(name) if device.type == "cuda" else None)
    return {"device": str(device), "name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "peak_bf16_tflops": peak, **extra}


# ---- puzzles -------------------------------------------------------------------------------------
@dataclass
class Puzzles:
    questions: list[str]
    answers: list[str | None]
    source: str


def load_puzzles(path: Path, n: int) -> Puzzles:
    """n real puzzles from the CSV at `path`, else the web page's bundled examples (repeated to n)."""
    if path.is_file():
        rows = read_puzzle_csv(path, limit=n)
        return Puzzles([r.question for r in rows], [r.answer for r in rows], str(path))
    examples = [e["puzzle"] for group in json.loads(EXAMPLES.read_text())["difficulties"].values() for e in group]
    questions = [examples[i % len(examples)] for i in range(n)]
    return Puzzles(questions, [None] * n, f"{EXAMPLES.name} ({len(examples)} puzzles, repeated; {path} not found)")


def _tokens(questions: list[str]) -> torch.Tensor:
    return torch.tensor([sudoku.encode(sudoku.parse(q)) for q in questions], dtype=torch.int32)


# ---- parity --------------------------------------------------------------------------------------
@dataclass
class RunResult:
    tokens: torch.Tensor  # int [N, L] argmax at the last step
    margin: torch.Tensor  # float [N, L] top-2 logit gap at the last step
    q_halt: torch.Tensor  # float [N]


def run_fixed(model: TRM, step: Callable, inputs: torch.Tensor, steps: int, batch: int) -> RunResult:
    """Every row `steps` ACT steps, in batches of `batch` rows; the last step's outputs, on the CPU."""
    dev = model.device
    toks, gaps, qs = [], [], []
    with torch.inference_mode():
        for s in range(0, inputs.shape[0], batch):
            x = inputs[s:s + batch].to(dev)
            n = x.shape[0]
            carry = model.reset_rows(model.empty_carry(n), torch.ones(n, dtype=torch.bool, device=dev), x,
                                     torch.zeros(n, dtype=torch.int32, device=dev))
            for _ in range(steps):
                carry, out = step(carry)
            top2 = out.logits.float().topk(2, dim=-1).values
            toks.append(out.logits.argmax(-1).cpu())
            gaps.append((top2[..., 0] - top2[..., 1]).cpu())
            qs.append(out.q_halt_logits.float().cpu())
    return RunResult(torch.cat(toks), torch.cat(gaps), torch.cat(qs))


def compare(a: RunResult, b: RunResult, max_listed: int = 50) -> dict[str, Any]:
    """Rows whose answers differ, each with `a`'s smallest margin over its differing cells."""
    differ = (a.tokens != b.tokens)
    rows = differ.any(-1).nonzero().flatten().tolist()
    listed = [{"row": i, "cells": int(differ[i].sum()), "margin": float(a.margin[i][differ[i]].min())}
              for i in rows[:max_listed]]
    return {"equal": a.tokens.shape[0] - len(rows), "differing": len(rows), "rows": listed,
            "max_q_halt_diff": float((a.q_halt - b.q_halt).abs().max()) if a.q_halt.numel() else 0.0}


def solved(run: RunResult, inputs: torch.Tensor, answers: list[str | None]) -> int | None:
    if any(a is None for a in answers):
        return None
    digits = lambda t: (t.long() - 1).clamp(min=0)  # noqa: E731
    return int(sudoku.is_solution_batch(digits(inputs), digits(run.tokens)).sum())


def check_parity(device: torch.device, puzzles: Puzzles, batch: int) -> dict[str, Any]:
    master, _ = load_checkpoint(BUNDLED, device="cpu")
    master.eval()
    steps = master.config.halt_max_steps
    inputs = _tokens(puzzles.questions)
    t0 = time.perf_counter()
    ref = run_fixed(master, master.step, inputs, steps, batch=min(batch, 64))
    log(f"parity: CPU float32 done ({time.perf_counter() - t0:.1f}s)")
    served = prepare_model(copy.deepcopy(master).to(device))  # bf16 on CUDA, as the runner serves it
    eager = run_fixed(served, EagerStep(served), inputs, steps, batch)
    log("parity: eager on the device done")
    bucketed = BucketedStep(served, batch)
    report = bucketed.capture_all()  # the service's start-up: capture and self-check every bucket
    graphs = run_fixed(served, bucketed, inputs, steps, batch)
    log(f"parity: bucketed stepper done (graphs {report})")
    return {
        "puzzles": len(puzzles.questions), "source": puzzles.source, "steps": steps, "batch": batch,
        "serving_dtype": str(next(served.parameters()).dtype).removeprefix("torch."),
        "cuda_graphs": report if bucketed.use_graphs else None,
        "self_check_mismatch": {str(b): m for b, m in bucketed.fallback.items()},
        "graphs_vs_eager": compare(graphs, eager),
        "eager_vs_cpu_fp32": compare(eager, ref),
        "graphs_vs_cpu_fp32": compare(graphs, ref),
        "solved": {"cpu_fp32": solved(ref, inputs, puzzles.answers), "eager": solved(eager, inputs, puzzles.answers),
                   "graphs": solved(graphs, inputs, puzzles.answers)},
    }


# ---- throughput ----------------------------------------------------------------------------------
def subjects(quick_cpu: bool) -> list[tuple[str, TRM]]:
    """The bundled model and two random-weight presets (CPU --quick: the presets narrowed to hidden 64
    and one cycle each, so that a CPU steps them in seconds; the name says so)."""
    master, _ = load_checkpoint(BUNDLED, device="cpu")
    out = [("bundled-sudoku", master.eval())]
    for name in ("sudoku-mlp", "arc-att"):
        cfg = TRMConfig.preset(name)
        if quick_cpu:
            cfg = cfg.replace(hidden_size=64, num_heads=2, H_cycles=1, L_cycles=1, puzzle_emb_ndim=64)
            name += " (narrowed: hidden 64, 1+1 cycles)"
        torch.manual_seed(0)
        out.append((name, TRM(cfg).eval()))
    return out


def time_step(step: Callable, carry: Any, device: torch.device, min_time_s: float) -> float:
    def run() -> None:
        step(carry)
        sync(device)

    return model_bench.time_fn(run, min_time_s)


def bench_throughput(device: torch.device, max_rows: int, min_time_s: float, max_point_s: float,
                     peak: float | None, quick_cpu: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, model in subjects(quick_cpu):
        flops, _, _ = model_bench.row_step_flops(copy.deepcopy(model).to("meta"))  # counted, not computed
        served = prepare_model(model.to(device))
        stepper = BucketedStep(served, max_rows)
        res: dict[str, Any] = {"config": served.config.to_dict(), "flops_per_row_step": flops, "points": []}
        try:
            res["cuda_graphs"] = stepper.capture_all() if stepper.use_graphs else None
        except torch.cuda.OutOfMemoryError as e:
            res["cuda_graphs"] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
        last_s = None
        for rows in row_buckets(max_rows):
            if last_s is not None and last_s * 2 * 3 > max_point_s:  # next bucket, warm-up + 2 reps, both modes
                res["points"].append({"rows": rows, "skipped": f"estimated over --max-point-s {max_point_s}"})
                continue
            try:
                with torch.inference_mode():
                    c = served.empty_carry(rows)
                    c = served.reset_rows(c, torch.ones(rows, dtype=torch.bool, device=device), c.inputs,
                                          c.puzzle_ids)
                    t_eager = time_step(served.step, c, device, min_time_s)
                    t_graph = time_step(stepper, c, device, min_time_s) if stepper.use_graphs else None
            except torch.cuda.OutOfMemoryError as e:
                res["points"].append({"rows": rows, "error": f"out of memory: {str(e).splitlines()[0]}"})
                torch.cuda.empty_cache()
                break
            best = min(t for t in (t_eager, t_graph) if t is not None)
            point: dict[str, Any] = {
                "rows": rows, "eager_row_steps_s": rows / t_eager,
                "graphs_row_steps_s": rows / t_graph if t_graph is not None else None,
                "gflops_s": flops * rows / best / 1e9,
            }
            point["peak_fraction"] = point["gflops_s"] / (peak * 1e3) if peak else None
            res["points"].append(point)
            last_s = max(t for t in (t_eager, t_graph) if t is not None)
            log(f"throughput: {name} {rows} rows: {rows / best:.1f} row-steps/s, {point['gflops_s']:.1f} GFLOP/s")
        out[name] = res
        del served, stepper
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ---- http ----------------------------------------------------------------------------------------
def _server_view(server: Any) -> dict[str, Any]:
    _, body = asyncio.run(serve_bench._get(server.port, "/v1/models"))
    model = json.loads(body)["models"][0]
    _, metrics = asyncio.run(serve_bench._get(server.port, "/metrics"))
    fallback = re.search(r"^trm_device_fallback_cpu (\S+)$", metrics.decode(), re.M)
    return {"device": model["device"], "cuda_graphs": model.get("cuda_graphs"),
            "device_fallback_cpu": float(fallback.group(1)) if fallback else None}


def bench_http(device: torch.device, puzzles: Puzzles, slot_counts: list[int], threads: int) -> dict[str, Any]:
    """Two puzzles per slot through each server: the pool fills, turns over once, then drains."""
    out: dict[str, Any] = {}
    for slots in slot_counts:
        n = 2 * slots
        work = [serve_bench.Puzzle(puzzles.questions[i % len(puzzles.questions)],
                                   puzzles.answers[i % len(puzzles.questions)] or "", "gpu_check") for i in range(n)]
        env = {"TRM_DEVICE": str(device), "TRM_WARMUP_STEPS": "2"}
        t0 = time.perf_counter()
        with serve_bench.Server(slots, queue_rows=2 * slots, threads=threads, env=env) as server:
            start_s = time.perf_counter() - t0
            view = _server_view(server)
            r = serve_bench.run_http(server, work, clients=slots, halting="learned")
        out[str(slots)] = {
            "slots": slots, "puzzles": n, "clients": slots, "start_s": start_s, **view,
            **{k: r[k] for k in ("puzzles_per_s", "steady_puzzles_per_s", "p50_s", "p99_s", "mean_steps",
                                 "mean_occupancy", "errors", "valid")},
        }
        log(f"http: {slots} slots: {r['puzzles_per_s']:.1f} puzzles/s, p50 {r['p50_s']:.3f}s, p99 {r['p99_s']:.3f}s")
    return out


# ---- main ----------------------------------------------------------------------------------------
def _finite(obj: Any) -> Any:
    """NaN/inf (e.g. latency percentiles with no answers) as null: the output stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as e:  # one broken section must not hide the others' results
        log(traceback.format_exc())
        res = {"error": f"{type(e).__name__}: {e}"}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"{name}: {res['seconds']:.1f}s")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--quick", action="store_true", help="fewer puzzles, buckets up to 64, fewer slots")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Sudoku CSV (source,question,answer,rating)")
    ap.add_argument("--puzzles", type=int, default=None, help="parity puzzles (default 512; --quick 24)")
    ap.add_argument("--max-rows", type=int, default=None, help="largest bucket (default 1024; --quick 64)")
    ap.add_argument("--slots", default=None, help="HTTP slot counts, comma-separated (default 64,256,1024)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads here and in the server")
    ap.add_argument("--max-point-s", type=float, default=None, help="skip throughput points estimated longer")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak bf16 TFLOP/s, if not in "
                                                                     "the table")
    ap.add_argument("--skip", default="", help="sections to leave out, comma-separated (parity,throughput,http)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": f"--device {args.device}: CUDA is not available here; use --device cpu"}))
        return 2
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    cpu = device.type == "cpu"
    quick = args.quick
    threads = args.threads or (min(4, os.cpu_count() or 1) if not quick else 1)
    torch.set_num_threads(threads)
    n_puzzles = args.puzzles or (24 if quick else 512)
    max_rows = args.max_rows or (64 if quick else 1024)
    slots = [int(s) for s in args.slots.split(",")] if args.slots else ([4, 16] if quick else [64, 256, 1024])
    max_point_s = args.max_point_s or (3.0 if quick else 20.0)
    min_time_s = 0.0 if quick else 0.3
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    t0 = time.perf_counter()
    info = device_info(device, args.peak_tflops)
    log(f"gpu_check on {info['name']} ({device}), quick={quick}")
    puzzles = load_puzzles(args.data, n_puzzles)
    result: dict[str, Any] = {"device": info, "quick": quick}
    # batches of 200 rows: 512 puzzles fill the 200-row bucket twice and pad 112 rows into the 128-row one
    result["parity"] = (_section("parity", lambda: check_parity(device, puzzles, min(max_rows, 200)))
                        if "parity" not in skip else {"skipped": True})
    result["throughput"] = (_section("throughput", lambda: bench_throughput(
        device, max_rows, min_time_s, max_point_s, info["peak_bf16_tflops"], quick and cpu))
        if "throughput" not in skip else {"skipped": True})
    result["http"] = (_section("http", lambda: bench_http(device, puzzles, slots, threads))
                      if "http" not in skip else {"skipped": True})
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(_finite(result), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
