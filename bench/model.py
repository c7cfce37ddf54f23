"""How fast is one ACT step, and how close to the machine's matmul speed is it?

Per model (the paper's presets from `trm_core.config` and the bundled Sudoku checkpoint) and per
batch size, this measures puzzle-steps/s and achieved FLOP/s (FLOPs counted by
`torch.utils.flop_counter.FlopCounterMode` on one real step), next to a plain-matmul baseline: the
exact matmul shapes one network application issues (recorded at the aten level), replayed as bare
`torch.mm`/`torch.bmm` in the same run. The ratio model/matmul says how much of the step is spent
outside the matmuls (norms, SwiGLU gating, copies, Python).

A step is `H_cycles * (L_cycles + 1)` applications of the same network plus two tiny heads, so the
unit timed is one network application (`TRM._net`); steps/s = batch / (applications x time). For
the bundled model the full `TRM.step` is timed too, which checks that extrapolation. Points whose
estimated time exceeds `--max-point-s` are skipped (e.g. the 30x30 presets at batch 256 would take
minutes per repetition on a CPU).

`torch.compile` (inductor) of the network application is measured where it compiles (guarded: a
missing compiler is reported, not raised), on the bundled model and on one preset.

    python bench/model.py --threads 1            # the full sweep (a few minutes on a 2-core CPU)
    python bench/model.py --threads 1 --quick    # a smaller sweep (about a minute)

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from trm_core import TRM, TRMConfig, load_checkpoint
from trm_core.config import PRESETS

BUNDLED = Path(__file__).resolve().parents[1] / "trm_core" / "pretrained" / "sudoku.safetensors"
# For the GPU estimate only (nothing here is measured on a GPU): an A100-class card reaching ~40% of
# its 312 bf16 TFLOP/s on these small matmuls; ~8 us of PyTorch eager dispatch per op; ~2 us between
# kernels in a CUDA-graph replay; ~50 us for the one device-to-host copy per step.
GPU_ASSUMPTIONS = {"tflops": 125.0, "eager_us": 8.0, "graph_us": 2.0, "sync_us": 50.0}
aten = torch.ops.aten


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def applications_per_step(cfg: TRMConfig) -> int:
    """Network applications in one ACT step: T deep-recursion passes of n latent updates + 1 answer update."""
    return cfg.H_cycles * (cfg.L_cycles + 1)


def count_flops(fn: Callable[[], Any]) -> tuple[int, bool]:
    """Total FLOPs, and whether the counter saw the attention kernel (it has no formula for torch's
    CPU flash-attention op, so attention would silently count as zero)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    ops = {str(op) for per_module in counter.get_flop_counts().values() for op in per_module}
    return int(counter.get_total_flops()), any("scaled_dot_product" in op for op in ops)


class MatmulRecorder(TorchDispatchMode):
    """Records the (kind, shapes) of every matmul an eager computation issues, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        self.attention_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        if func is aten.linear.default:  # kept whole under inference_mode: x [..., in] @ w[out, in]^T
            x, w = args[0], args[1]
            self.ops.append(("mm", (x.numel() // x.shape[-1], x.shape[-1]), (w.shape[1], w.shape[0])))
        elif func is aten.mm.default:
            self.ops.append(("mm", tuple(args[0].shape), tuple(args[1].shape)))
        elif func is aten.addmm.default:
            self.ops.append(("mm", tuple(args[1].shape), tuple(args[2].shape)))
        elif func is aten.bmm.default:
            self.ops.append(("bmm", tuple(args[0].shape), tuple(args[1].shape)))
        elif func is aten.scaled_dot_product_attention.default:  # its CPU kernel is seen as well: count once
            q, k = args[0], args[1]  # [B, H, L, hd]
            b, h, lq, hd = q.shape
            lk = k.shape[-2]
            self.ops.append(("bmm", (b * h, lq, hd), (b * h, hd, lk)))  # scores = q k^T
            self.ops.append(("bmm", (b * h, lq, lk), (b * h, lk, hd)))  # out = p v
            self.attention_flops += 4 * b * h * lq * lk * hd
        return func(*args, **kwargs)


class KernelCounter(TorchDispatchMode):
    """Counts the aten ops of an eager computation that would launch a device kernel: not views,
    not dtype conversions to the dtype a tensor already has."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        is_cast = func in (aten.to.dtype, aten.to.dtype_layout, aten.to.device)  # schema says "may alias"
        is_noop_cast = is_cast and out is args[0]
        is_tensor = isinstance(out, torch.Tensor) or (isinstance(out, tuple | list) and out
                                                      and isinstance(out[0], torch.Tensor))
        # The CPU attention kernel is reached through the composite op: count the composite only.
        is_inner = "flash_attention_for_cpu" in str(func)
        if is_tensor and not ((func.is_view and not is_cast) or is_noop_cast or is_inner
                              or func in (aten.detach.default, aten.lift_fresh.default)):
            self.count += 1
            name = str(func.overloadpacket.__name__)
            self.by_op[name] = self.by_op.get(name, 0) + 1
        return out


def count_kernels(cfg: TRMConfig) -> dict[str, Any]:
    """Kernels one eager ACT step launches on a GPU, counted on a tiny bfloat16 model of the same
    structure (the op sequence depends on layers, cycles and variant, not on sizes).

    bfloat16 with bfloat16 parameters is the CUDA serving setup (service/engine/stepper.py): the casts the
    step does (norms in float32 and back) are counted, the parameter casts it no longer does are not.
    """
    tiny = cfg.replace(hidden_size=32, num_heads=2, seq_len=8, puzzle_emb_ndim=min(cfg.puzzle_emb_ndim, 32),
                       grid_height=0, grid_width=0, num_puzzle_identifiers=1)
    torch.manual_seed(0)
    model = TRM(tiny).eval().to(torch.bfloat16)
    with torch.inference_mode():
        carry = model.empty_carry(1)
        carry = model.reset_rows(carry, torch.ones(1, dtype=torch.bool), carry.inputs, carry.puzzle_ids)
        step_counter = KernelCounter()
        with step_counter:
            model.step(carry)
        app_counter = KernelCounter()
        with app_counter:
            model._net(carry.z_H, carry.z_L)
    return {"kernels_per_step": step_counter.count, "kernels_per_application": app_counter.count,
            "by_op": dict(sorted(step_counter.by_op.items(), key=lambda kv: -kv[1]))}


def gpu_estimate(flops_per_puzzle_step: int, kernels_per_step: int, batches: list[int], *, tflops: float,
                 eager_us: float, graph_us: float, sync_us: float) -> dict[str, Any]:
    """An ESTIMATE, not a measurement: step time = max(compute, launches) + one host sync, with
    compute = batch x FLOPs / achieved FLOP/s and launches = kernels x per-kernel cost (eager: the
    CPU-side dispatch of each op; CUDA graph: the device-side gap between replayed kernels)."""
    out: dict[str, Any] = {"assumptions": {"achieved_tflops": tflops, "eager_us_per_kernel": eager_us,
                                           "graph_us_per_kernel": graph_us, "sync_us_per_step": sync_us},
                           "points": []}
    for b in batches:
        compute_s = b * flops_per_puzzle_step / (tflops * 1e12)
        eager_s = max(compute_s, kernels_per_step * eager_us * 1e-6) + sync_us * 1e-6
        graph_s = max(compute_s, kernels_per_step * graph_us * 1e-6) + sync_us * 1e-6
        out["points"].append({"batch": b, "eager_puzzle_steps_per_s": b / eager_s,
                              "graph_puzzle_steps_per_s": b / graph_s, "graph_speedup": eager_s / graph_s,
                              "compute_bound": compute_s >= kernels_per_step * graph_us * 1e-6})
    return out


def matmul_replay(ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]], dtype: torch.dtype
                  ) -> tuple[Callable[[], None], int]:
    """A function issuing the same matmuls on preallocated random operands, and its FLOPs."""
    operands = [(kind, torch.randn(a, dtype=dtype), torch.randn(b, dtype=dtype)) for kind, a, b in ops]
    outs = [torch.empty(a[:-1] + b[-1:], dtype=dtype) for _, a, b in ops]

    def run() -> None:
        for (kind, a, b), out in zip(operands, outs, strict=True):
            (torch.bmm if kind == "bmm" else torch.mm)(a, b, out=out)

    return run, ops_flops(ops)


def ops_flops(ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> int:
    """FLOPs of recorded matmuls (MatmulRecorder.ops)."""
    return sum(2 * (a[0] if kind == "bmm" else 1) * a[-2] * a[-1] * b[-1] for kind, a, b in ops)


def time_fn(fn: Callable[[], Any], min_time_s: float, min_reps: int = 2) -> float:
    """Seconds per call: one warm-up call, then repeat until min_time_s and min_reps (best of the runs)."""
    fn()
    times: list[float] = []
    total = 0.0
    while len(times) < min_reps or total < min_time_s:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return min(times)


def time_pair(f: Callable[[], Any], g: Callable[[], Any], min_time_s: float, min_reps: int = 5,
              clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Best-of times of f and g, called alternately, so that load from other jobs hits both alike."""
    f(), g()
    tf: list[float] = []
    tg: list[float] = []
    while len(tf) < min_reps or sum(tf) + sum(tg) < 2 * min_time_s:
        for fn, ts in ((f, tf), (g, tg)):
            t0 = clock()
            fn()
            ts.append(clock() - t0)
    return min(tf), min(tg)


def bench_chunked(model: TRM, batches: list[int], chunk_rows: int, min_time_s: float) -> dict[str, Any]:
    """One step over the whole batch vs in chunks of `chunk_rows` rows (the service's CPU stepper),
    alternated, in wall time and in this thread's CPU time (which other jobs on the box do not inflate)."""
    from service.engine.stepper import ChunkedStep

    chunked = ChunkedStep(model, chunk_rows)
    out: dict[str, Any] = {"chunk_rows": chunk_rows, "points": []}
    with torch.inference_mode():
        for batch in batches:
            c = model.empty_carry(batch)
            c = model.reset_rows(c, torch.ones(batch, dtype=torch.bool), c.inputs, c.puzzle_ids)
            w_whole, w_chunk = time_pair(lambda: model.step(c), lambda: chunked(c), min_time_s)  # noqa: B023
            c_whole, c_chunk = time_pair(lambda: model.step(c), lambda: chunked(c), min_time_s,  # noqa: B023
                                         clock=time.thread_time)
            out["points"].append({"batch": batch, "whole_s": w_whole, "chunked_s": w_chunk,
                                  "speedup": w_whole / w_chunk, "whole_cpu_s": c_whole, "chunked_cpu_s": c_chunk,
                                  "cpu_speedup": c_whole / c_chunk})
            log(f"  chunks of {chunk_rows} at batch {batch}: {w_whole / w_chunk:.2f}x wall, "
                f"{c_whole / c_chunk:.2f}x CPU time")
    return out


@dataclass
class Subject:
    name: str
    model: TRM


def make_subjects(presets: list[str], with_bundled: bool) -> list[Subject]:
    out: list[Subject] = []
    if with_bundled and BUNDLED.is_file():
        model, _ = load_checkpoint(BUNDLED, device="cpu")
        out.append(Subject("bundled-sudoku", model.eval()))
    for name in presets:
        torch.manual_seed(0)
        out.append(Subject(name, TRM(TRMConfig.preset(name)).eval()))
    return out


def _states(model: TRM, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, cfg.total_len, cfg.hidden_size, generator=g)
    inj = torch.randn(batch, cfg.total_len, cfg.hidden_size, generator=g)
    return z.to(model.device), inj.to(model.device)  # the meta device counts FLOPs without computing


def row_step_flops(model: TRM) -> tuple[int, int, int]:
    """FLOPs of one ACT step and of one network application for one row, and the attention FLOPs
    per application added by hand where the counter missed the attention kernel.

    Whether it missed it is judged from the matmuls themselves (every FLOP counted is a matmul's):
    torch's CPU attention kernel has no formula, while on the meta device attention runs as plain
    matmuls that the counter does see, under another op's name.
    """
    apps = applications_per_step(model.config)
    with torch.inference_mode():
        carry = model.empty_carry(1)
        carry = model.reset_rows(carry, torch.ones(1, dtype=torch.bool), carry.inputs, carry.puzzle_ids)
        step_flops, _ = count_flops(lambda: model.step(carry))  # per puzzle-step (batch 1)
        z, inj = _states(model, 1)
        net_flops, _ = count_flops(lambda: model._net(z, inj))
        rec = MatmulRecorder()
        with rec:
            model._net(z, inj)
        added = ops_flops(rec.ops) - net_flops  # per application, batch 1: 0 or the attention's FLOPs
    return step_flops + added * apps, net_flops + added, added


def bench_subject(sub: Subject, batches: list[int], min_time_s: float, max_point_s: float,
                  full_step_batches: set[int], compile_batches: list[int], chunk_batches: list[int]
                  ) -> dict[str, Any]:
    model, cfg = sub.model, sub.model.config
    apps = applications_per_step(cfg)
    step_flops, net_flops, added = row_step_flops(model)
    kernels = count_kernels(cfg)
    res: dict[str, Any] = {
        "kernels": kernels,
        "gpu_estimate": gpu_estimate(step_flops, kernels["kernels_per_step"], [1, 16, 64, 256, 1024, 4096],
                                     **GPU_ASSUMPTIONS),
        "config": cfg.to_dict(), "params": model.num_trainable_params(), "applications_per_step": apps,
        "flops_per_puzzle_step": step_flops, "flops_per_application": net_flops,
        "attention_flops_added_per_application": added, "points": [],
    }
    rate_guess = 50e9  # FLOP/s, refined by the first measurement; only used to skip points over budget
    for batch in batches:
        est = net_flops * batch / rate_guess * 3  # warm-up + 2 reps, model and matmul
        if est > max_point_s:
            res["points"].append({"batch": batch, "skipped": f"estimated {est:.0f}s > --max-point-s {max_point_s}"})
            continue
        with torch.inference_mode():
            z, inj = _states(model, batch)
            rec = MatmulRecorder()
            with rec:
                model._net(z, inj)
            t_net = time_fn(lambda: model._net(z, inj), min_time_s)  # noqa: B023 (called right here)
            mm_run, mm_flops = matmul_replay(rec.ops, z.dtype)
            t_mm = time_fn(mm_run, min_time_s)
            point: dict[str, Any] = {
                "batch": batch, "application_s": t_net,
                "puzzle_steps_per_s": batch / (apps * t_net),
                "gflops": net_flops * batch / t_net / 1e9,
                "matmul_gflops": mm_flops / t_mm / 1e9, "matmul_share_of_flops": mm_flops / (net_flops * batch),
                "matmuls_per_application": len(rec.ops),
            }
            point["model_vs_matmul"] = point["gflops"] / point["matmul_gflops"]
            if batch in full_step_batches:
                c = model.empty_carry(batch)
                c = model.reset_rows(c, torch.ones(batch, dtype=torch.bool), c.inputs, c.puzzle_ids)
                t_step = time_fn(lambda: model.step(c), min_time_s)  # noqa: B023
                point["step_s"] = t_step
                point["puzzle_steps_per_s_full_step"] = batch / t_step
        rate_guess = point["gflops"] * 1e9
        res["points"].append(point)
        log(f"  {sub.name} batch {batch}: {point['puzzle_steps_per_s']:.1f} puzzle-steps/s, "
            f"{point['gflops']:.1f} GFLOP/s (matmul {point['matmul_gflops']:.1f})")
    if chunk_batches:
        res["chunked"] = bench_chunked(model, chunk_batches, 8, min_time_s)
    if compile_batches:
        res["compile"] = bench_compile(model, compile_batches, min_time_s)
    return res


def bench_compile(model: TRM, batches: list[int], min_time_s: float) -> dict[str, Any]:
    """Eager vs torch.compile(inductor) of one network application, dynamic batch (one compile)."""
    out: dict[str, Any] = {"backend": "inductor", "dynamic": True, "points": []}
    try:
        compiled = torch.compile(model._net, dynamic=True)
        with torch.inference_mode():
            z, inj = _states(model, batches[0])
            t0 = time.perf_counter()
            compiled(z, inj)
            out["compile_s"] = time.perf_counter() - t0
            for batch in batches:
                z, inj = _states(model, batch)
                ref = model._net(z, inj)
                got = compiled(z, inj)
                t_eager, t_comp = time_pair(lambda: model._net(z, inj), lambda: compiled(z, inj),  # noqa: B023
                                            min_time_s)
                out["points"].append({"batch": batch, "eager_s": t_eager, "compiled_s": t_comp,
                                      "speedup": t_eager / t_comp,
                                      "max_abs_diff": float((ref - got).abs().max())})
                log(f"  compile batch {batch}: eager {t_eager * 1e3:.2f} ms, compiled {t_comp * 1e3:.2f} ms "
                    f"({t_eager / t_comp:.2f}x)")
    except Exception as e:  # no C++ compiler, unsupported op, ...: report, do not fail the bench
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log(f"  compile failed: {out['error']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batches 1,16,64; two presets; short timings")
    p.add_argument("--presets", default=None, help=f"comma-separated, from {sorted(PRESETS)} (default: all)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,4,16,64,256)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--min-time-s", type=float, default=None, help="time each point at least this long")
    p.add_argument("--max-point-s", type=float, default=None, help="skip points estimated to take longer")
    p.add_argument("--no-bundled", action="store_true", help="skip the bundled Sudoku checkpoint")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    batches = [int(b) for b in (args.batches or ("1,16,64" if quick else "1,4,16,64,256")).split(",")]
    presets = ([p for p in args.presets.split(",") if p] if args.presets is not None else
               (["sudoku-mlp", "sudoku-att"] if quick else sorted(PRESETS)))
    min_time_s = args.min_time_s if args.min_time_s is not None else (0.05 if quick else 0.2)
    max_point_s = args.max_point_s if args.max_point_s is not None else (2.0 if quick else 8.0)
    compile_batches = [] if args.no_compile else ([16, 64] if quick else [1, 16, 64, 256])

    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    for sub in make_subjects(presets, not args.no_bundled):
        log(f"{sub.name}: {sub.model.num_trainable_params():,} params")
        is_bundled = sub.name == "bundled-sudoku"
        results[sub.name] = bench_subject(
            sub, batches, min_time_s, max_point_s,
            full_step_batches=set(batches) if is_bundled else set(),
            chunk_batches=[b for b in batches if b > 8] if is_bundled else [],
            compile_batches=compile_batches if is_bundled else
            ([b for b in compile_batches if b <= 16] if sub.name == "sudoku-mlp" else []))
    print(json.dumps({
        "bench": "model", "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "quick": quick, "batches": batches, "elapsed_s": time.perf_counter() - t_start, "models": results,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
