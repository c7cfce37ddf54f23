"""Does an ARC adaptation job stall serving? Sudoku latency with and without one running.

One app (in-process, the real lifespan, registry, worker threads and adaptation threads) serves the
bundled Sudoku model and an ARC model. `--clients` closed-loop clients post one real Sudoku puzzle
at a time for `--seconds` per phase:

    idle       no adaptation
    adapting   an adaptation job runs (POST /v1/arc/tasks, an ARC-AGI-1 evaluation task)
    no_nice    the same, with the adaptation thread at the serving worker's priority (TRM_ADAPT_NICE=0)

    python bench/adapt.py --arc-model /work/runs/arc-cpu/arc-cpu.safetensors
    python bench/adapt.py                 # a small random ARC model on a 30x30 canvas instead

Prints one JSON line: per phase the number of answers, latency p50/p99 (s), answers/s, the job's
training steps during the phase; and the ratios adapting/idle. One run on one (shared) machine:
compare the ratios, not absolute numbers, across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def _puzzles(n: int) -> list[str]:
    rows = (SHARED / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv").read_text().splitlines()[1:n + 1]
    return [r.split(",")[1] for r in rows]


def _eval_task() -> dict:
    path = sorted((SHARED / "arc" / "arc-agi-1" / "evaluation").glob("*.json"))[0]
    return json.loads(path.read_text())


def _random_arc_model(path: Path) -> Path:
    from trm_core import TRM, TRMConfig, save_checkpoint

    torch.manual_seed(0)
    cfg = TRMConfig(hidden_size=64, num_heads=2, expansion=4.0, L_layers=1, H_cycles=1, L_cycles=2, halt_max_steps=4,
                    seq_len=900, vocab_size=12, puzzle_emb_ndim=128, puzzle_emb_len=2, num_puzzle_identifiers=2,
                    pos_encodings="rope", task="arc", grid_height=30, grid_width=30)
    save_checkpoint(TRM(cfg), path, metadata={"task": "arc", "arc_tasks": {"0" * 64: [{"puzzle_id": 1}]}})
    return path


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _load(client: httpx.AsyncClient, puzzles: list[str], clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one(i: int) -> None:
        k = i
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = await client.post("/v1/sudoku/solve", json={"puzzle": puzzles[k % len(puzzles)]})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            k += clients

    await asyncio.gather(*(one(i) for i in range(clients)))
    return latencies


async def _phase(settings, name: str, arc_task: dict | None, args) -> dict:
    from service.api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=120) as client:
            puzzles = _puzzles(256)
            await _load(client, puzzles, args.clients, 1.0)  # warm up
            job_id, step0 = None, 0
            if arc_task is not None:
                job = (await client.post("/v1/arc/tasks", json={"task": arc_task})).json()
                job_id = job["id"]
                while (await client.get(f"/v1/arc/tasks/{job_id}")).json()["progress"] is None:
                    await asyncio.sleep(0.05)  # measure while it trains (after its first step)
                step0 = (await client.get(f"/v1/arc/tasks/{job_id}")).json()["progress"]["step"]
            t0 = time.perf_counter()
            lat = await _load(client, puzzles, args.clients, args.seconds)
            wall = time.perf_counter() - t0
            steps = None
            if job_id is not None:
                job = (await client.get(f"/v1/arc/tasks/{job_id}")).json()
                steps = (job["progress"] or {}).get("step", 0) - step0
                if job["state"] != "running":
                    steps = f"{steps} (job {job['state']} during the phase)"
                await client.delete(f"/v1/arc/tasks/{job_id}")
    return {"phase": name, "answers": len(lat), "p50_s": round(_pct(lat, 0.5), 4), "p99_s": round(_pct(lat, 0.99), 4),
            "mean_s": round(statistics.fmean(lat), 4) if lat else None, "answers_per_s": round(len(lat) / wall, 2),
            "adapt_steps_in_phase": steps}


async def _main(args) -> dict:
    from service.settings import Settings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        arc_model = Path(args.arc_model) if args.arc_model else _random_arc_model(Path(tmp) / "arc.safetensors")
        sudoku = ROOT / "trm_core" / "pretrained" / "sudoku.safetensors"
        settings = Settings(models=[f"sudoku={sudoku}", f"arc={arc_model}"], device="cpu", max_batch=args.slots,
                            max_queue=4096, torch_threads=1, warmup_steps=1, adapt_max_steps=100_000,
                            adapt_max_s=3600.0, adapt_batch_size=args.adapt_batch, adapt_versions=8)
        task = _eval_task()
        out = [await _phase(settings, "idle", None, args), await _phase(settings, "adapting", task, args)]
        out.append(await _phase(settings.model_copy(update={"adapt_nice": 0}), "no_nice", task, args))
    idle, busy, flat = out
    return {
        "bench": "adapt", "phases": out,
        "p99_adapting_over_idle": round(busy["p99_s"] / idle["p99_s"], 3),
        "p50_adapting_over_idle": round(busy["p50_s"] / idle["p50_s"], 3),
        "throughput_adapting_over_idle": round(busy["answers_per_s"] / idle["answers_per_s"], 3),
        "p99_no_nice_over_idle": round(flat["p99_s"] / idle["p99_s"], 3),
        "settings": {"clients": args.clients, "seconds": args.seconds, "slots": args.slots,
                     "adapt_batch": args.adapt_batch, "arc_model": str(args.arc_model or "random 30x30, hidden 64")},
        "machine": {"cpus": os.cpu_count(), "torch_threads": 1, "python": platform.python_version(),
                    "torch": torch.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arc-model", default=None, help="an ARC checkpoint (default: a small random one)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="load per phase")
    p.add_argument("--slots", type=int, default=16, help="TRM_MAX_BATCH")
    p.add_argument("--adapt-batch", type=int, default=16, help="TRM_ADAPT_BATCH_SIZE")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args))))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
