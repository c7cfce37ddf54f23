"""Continuous (ACT-step) vs request-level batching through the real scheduler, optionally over HTTP.

A synthetic mixed workload: requests arrive as a Poisson process (or all at once with --rate 0)
and each one needs a different number of ACT steps (drawn from --steps, run with `fixed` halting
so that both modes do exactly the same work). Request-level batching runs a batch until its longest
row halts and admits nobody meanwhile; continuous batching refills a slot as soon as its row halts.

    python bench/bench_batching.py --synthetic                      # random tiny model, CPU
    python bench/bench_batching.py --checkpoint m.safetensors --num-requests 2000 --rate 400 --slots 64
    python bench/bench_batching.py --synthetic --http               # through create_app + httpx (in-process)

Prints one JSON line: per mode throughput (requests/s), latency p50/p99 (s), mean slot occupancy,
model steps; and continuous/request ratios, plus device and config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from service.engine.core import Engine
from service.engine.loop import EngineLoop
from service.engine.scheduler import Request
from trm_core import TRM, TRMConfig, load_checkpoint, save_checkpoint


def synthetic_model(device: str) -> TRM:
    """A random Sudoku-shaped TRM (hidden 64): enough compute per step for batching to matter."""
    torch.manual_seed(0)
    cfg = TRMConfig(hidden_size=64, num_heads=4, expansion=4.0, L_layers=2, H_cycles=2, L_cycles=2,
                    halt_max_steps=16, seq_len=81, vocab_size=11, puzzle_emb_ndim=64, puzzle_emb_len=1,
                    task="sudoku", grid_height=9, grid_width=9)
    return TRM(cfg).to(device).eval()


def _puzzle_tokens(rng: random.Random, seq_len: int) -> list[int]:
    """Sudoku-shaped inputs with consistent givens (so the HTTP path accepts them): a valid grid
    (the pattern (3r + r//3 + c) mod 9) with about 2/3 of the cells blanked; random tokens otherwise."""
    if seq_len != 81:
        return [rng.randint(1, 10) for _ in range(seq_len)]
    return [1 if rng.random() < 0.67 else ((r * 3 + r // 3 + c) % 9) + 2 for r in range(9) for c in range(9)]


def make_workload(n: int, rate: float, steps: list[int], seq_len: int, seed: int) -> list[tuple[float, int, list[int]]]:
    """(arrival offset s, step budget, tokens) per request; the same list for both modes."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate) if rate > 0 else 0.0
        out.append((t, rng.choice(steps), _puzzle_tokens(rng, seq_len)))
    return out


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_scheduler(model: TRM, workload: list, batching: str, slots: int, max_wait_s: float) -> dict[str, float]:
    """Drive the real Scheduler + EngineLoop thread; arrivals are paced by this thread."""
    engine = Engine.for_model(model, slots, max_queue=len(workload), batching=batching, max_wait_s=max_wait_s)
    engine.warmup(2)
    scheduler = engine.scheduler
    worker = EngineLoop(batching, engine)
    done = threading.Event()
    latencies: list[float] = []
    lock = threading.Lock()

    def on_finish(r: Request) -> None:
        with lock:
            latencies.append(time.monotonic() - r.arrival_time)
            if len(latencies) == len(workload):
                done.set()

    def request(i: int, budget: int, tokens: list[int]) -> Request:
        return Request(request_id=str(i), inputs=torch.tensor(tokens), max_steps=budget, halting="fixed",
                       on_finish=on_finish)

    worker.start()
    t0 = time.monotonic()
    if all(offset == 0.0 for offset, _, _ in workload):  # --rate 0: one submit, both modes start from one queue
        worker.submit([request(i, budget, tokens) for i, (_, budget, tokens) in enumerate(workload)])
    else:
        for i, (offset, budget, tokens) in enumerate(workload):
            wait = t0 + offset - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # open-loop arrivals: a benchmark pacing real time, not synchronisation
            worker.submit([request(i, budget, tokens)])
    done.wait()
    elapsed = time.monotonic() - t0
    stats = scheduler.stats()
    worker.drain(10)
    return {"throughput_rps": len(workload) / elapsed, "p50_s": _percentile(latencies, 0.5),
            "p99_s": _percentile(latencies, 0.99), "mean_latency_s": statistics.fmean(latencies),
            "mean_occupancy": stats.mean_occupancy, "num_steps": stats.num_steps, "elapsed_s": elapsed}


async def run_http(path: Path, workload: list, batching: str, slots: int, max_wait_s: float,
                   device: str) -> dict[str, float]:
    """The same workload through create_app + httpx (in-process ASGI): adds validation, codecs, JSON."""
    import httpx

    from service.api.app import create_app
    from service.settings import Settings
    from trm_core.tasks import sudoku

    settings = Settings(models=[f"bench={path}"], device=device,
                        max_batch=slots, max_queue=len(workload), batching=batching, max_wait_s=max_wait_s,
                        max_steps_limit=max(b for _, b, _ in workload), request_timeout_s=600)
    app = create_app(settings)
    latencies: list[float] = []
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=600) as client:
            t0 = time.monotonic()

            async def one(offset: float, budget: int, tokens: list[int]) -> None:
                await asyncio.sleep(max(0.0, t0 + offset - time.monotonic()))
                start = time.monotonic()
                puzzle = sudoku.to_string(sudoku.decode(tokens))
                resp = await client.post("/v1/sudoku/solve", json={"puzzle": puzzle, "halting": "fixed",
                                                                   "max_steps": budget})
                resp.raise_for_status()
                latencies.append(time.monotonic() - start)

            await asyncio.gather(*(one(*w) for w in workload))
            elapsed = time.monotonic() - t0
        stats = app.state.registry.models["bench"].scheduler.stats()
    return {"throughput_rps": len(workload) / elapsed, "p50_s": _percentile(latencies, 0.5),
            "p99_s": _percentile(latencies, 0.99), "mean_latency_s": statistics.fmean(latencies),
            "mean_occupancy": stats.mean_occupancy, "num_steps": stats.num_steps, "elapsed_s": elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a trm-serve .safetensors (Sudoku-shaped for --http)")
    src.add_argument("--synthetic", action="store_true", help="random hidden-64 Sudoku-shaped model")
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--rate", type=float, default=0.0, help="Poisson arrivals per second; 0 = all at once")
    p.add_argument("--steps", default="1,2,4,8,16", help="step budgets to draw from (the mixed workload)")
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--max-wait-s", type=float, default=0.002)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--http", action="store_true", help="go through create_app + httpx instead of the scheduler")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            model, path = synthetic_model(args.device), Path(tmp) / "bench.safetensors"
            save_checkpoint(model, path, metadata={"task": "sudoku"})
        else:
            model, _ = load_checkpoint(args.checkpoint, device=args.device)
            path = args.checkpoint
        steps = [int(s) for s in args.steps.split(",")]
        workload = make_workload(args.num_requests, args.rate, steps, model.config.seq_len, args.seed)
        results: dict[str, Any] = {}
        for mode in ("continuous", "request"):
            if args.http:
                results[mode] = asyncio.run(run_http(path, workload, mode, args.slots, args.max_wait_s, args.device))
            else:
                results[mode] = run_scheduler(model, workload, mode, args.slots, args.max_wait_s)
    c, r = results["continuous"], results["request"]
    print(json.dumps({
        "bench": "batching", "via": "http" if args.http else "scheduler", "device": args.device,
        "threads": torch.get_num_threads(), "config": model.config.to_dict(), "num_requests": args.num_requests,
        "rate": args.rate, "steps": steps, "slots": args.slots, **results,
        "throughput_ratio": c["throughput_rps"] / r["throughput_rps"], "p50_ratio": c["p50_s"] / r["p50_s"],
        "p99_ratio": c["p99_s"] / r["p99_s"],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
