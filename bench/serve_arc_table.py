"""Serving a paper-size ARC puzzle table: start-up time and memory of the service, then one ARC task.

Runs the service's app in-process (the same lifespan as `trm serve`: the registry loads, checks
and warms up the checkpoint) on a converted checkpoint (bench/convert_original.py writes a
synthetic one with the `arc_v1_public` shapes), then POSTs one ARC-AGI-1 evaluation task from the
build's test_puzzles.json to /v1/arc/solve, its test outputs removed. Everything runs in one
fresh process; RSS is read from /proc after each phase and the peak from `ru_maxrss`.

    python bench/serve_arc_table.py --checkpoint DIR/arc.safetensors --dataset DATA_DIR
    python bench/serve_arc_table.py ... --versions 2 --max-steps 1     # a short solve on a slow CPU

With random weights the answer means nothing; what is measured is load time, memory, and the
request's path through the scheduler (rows = versions x test inputs). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import time
from pathlib import Path


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _task(dataset: Path, name: str | None) -> tuple[str, dict]:
    puzzles = json.loads((dataset / "test_puzzles.json").read_text())
    name = name or next(n for n, t in puzzles.items() if len(t["test"]) == 1)
    t = puzzles[name]
    return name, {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]}


async def run(args: argparse.Namespace) -> dict:
    import httpx

    from service.api.app import create_app
    from service.settings import Settings

    report: dict = {"settings": {"versions": args.versions, "max_steps": args.max_steps, "slots": args.slots,
                                 "warmup_steps": args.warmup_steps},
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "load_avg": os.getloadavg()},
                    "checkpoint_bytes": args.checkpoint.stat().st_size, "rss_before_bytes": _rss()}
    settings = Settings(models=[f"arc={args.checkpoint}"], device="cpu", warmup_steps=args.warmup_steps,
                        max_batch=args.slots,
                        max_queue=max(1024, args.versions), arc_max_versions=args.versions,
                        request_timeout_s=3600.0, max_steps_limit=16)
    app = create_app(settings)
    t0 = time.perf_counter()
    async with app.router.lifespan_context(app):
        report["startup_s"] = round(time.perf_counter() - t0, 2)
        report["rss_after_startup_bytes"] = _rss()
        report["peak_rss_after_startup_bytes"] = _peak()
        name, task = _task(args.dataset, args.task)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trm",
                                     timeout=3600.0) as client:
            t1 = time.perf_counter()
            r = await client.post("/v1/arc/solve", json={"task": task, "max_steps": args.max_steps,
                                                         "halting": "fixed"})
            body = r.json()
        report["solve"] = {"task": name, "status": r.status_code, "seconds": round(time.perf_counter() - t1, 2),
                           "num_versions": body.get("num_versions"), "steps": body.get("steps"),
                           "attempt_shapes": [[(len(g), len(g[0]) if g else 0) for g in a]
                                              for a in body.get("attempts", [])]}
        report["rss_after_solve_bytes"] = _rss()
    report["peak_rss_bytes"] = _peak()
    report["peak_over_checkpoint"] = round(report["peak_rss_bytes"] / report["checkpoint_bytes"], 3)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a converted ARC .safetensors")
    p.add_argument("--dataset", type=Path, required=True, help="the ARC build holding test_puzzles.json")
    p.add_argument("--task", default=None, help="task name in test_puzzles.json (default: the first with one test)")
    p.add_argument("--versions", type=int, default=2, help="TRM_ARC_MAX_VERSIONS for the solve")
    p.add_argument("--max-steps", type=int, default=1, help="ACT steps per row")
    p.add_argument("--slots", type=int, default=8, help="TRM_MAX_BATCH")
    p.add_argument("--warmup-steps", type=int, default=0, help="TRM_WARMUP_STEPS (0: start-up is loading and "
                   "checking only; a warm-up step of the full slot pool costs a step of --slots rows)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()
