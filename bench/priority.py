"""Request priority under saturation: a few priority -5 clients against many priority 5 clients.

Starts `python -m service` (bundled Sudoku model unless --model) on a loopback port with a small slot
pool (TRM_MAX_BATCH=--slots), so that --low-clients + --high-clients closed-loop clients keep far
more rows queued than there are slots. Every client posts one puzzle at a time (fixed halting,
--max-steps steps, so every request costs the same compute) and sends the next as soon as the answer
arrives. After --warmup-s, latencies are recorded for --seconds. Prints one JSON object:
  {"config": {...}, "priority": {"-5": {"requests", "p50_s", "p90_s", "statuses"}, "5": {...}},
   "p50_ratio": p50(-5) / p50(5), "target_p50_ratio_at_most_0.5": bool}

    python bench/priority.py                        # ~40 s on a 2-core CPU
    python bench/priority.py --high-clients 64 --low-clients 4 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import DEFAULT_PUZZLES, Server, load_puzzles, pct  # noqa: E402


async def load_phase(base: str, puzzles: list[str], clients: dict[int, int], warmup_s: float, seconds: float,
                     max_steps: int) -> dict:
    latencies: dict[int, list[float]] = {p: [] for p in clients}
    statuses: dict[int, Counter[str]] = {p: Counter() for p in clients}
    t_start = time.monotonic()
    record_from, stop = t_start + warmup_s, t_start + warmup_s + seconds
    total = sum(clients.values())
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=total + 8)) as http:
        async def client(priority: int, i: int) -> None:
            rng = random.Random(1000 * priority + i)
            while time.monotonic() < stop:
                body = {"puzzle": rng.choice(puzzles), "halting": "fixed", "max_steps": max_steps,
                        "priority": priority}
                t0 = time.monotonic()
                resp = await http.post("/v1/sudoku/solve", json=body)
                if t0 >= record_from and time.monotonic() <= stop:
                    statuses[priority][str(resp.status_code)] += 1
                    if resp.status_code == 200:
                        latencies[priority].append(time.monotonic() - t0)
                if resp.status_code in (429, 503):
                    await asyncio.sleep(min(1.0, float(resp.headers.get("retry-after", 1))))

        await asyncio.gather(*(client(p, i) for p, n in clients.items() for i in range(n)))
    return {str(p): {"clients": clients[p], "requests": len(latencies[p]), "p50_s": pct(latencies[p], 0.5),
                     "p90_s": pct(latencies[p], 0.9), "statuses": dict(statuses[p])} for p in clients}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="TRM_MODELS for the server (default: the bundled checkpoints)")
    p.add_argument("--puzzles", type=Path, default=DEFAULT_PUZZLES)
    p.add_argument("--slots", type=int, default=16, help="TRM_MAX_BATCH: small, so the clients saturate it")
    p.add_argument("--high-clients", type=int, default=64, help="closed-loop clients at --high-priority")
    p.add_argument("--low-clients", type=int, default=4, help="closed-loop clients at --low-priority")
    p.add_argument("--high-priority", type=int, default=5)
    p.add_argument("--low-priority", type=int, default=-5)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    puzzles = load_puzzles(args.puzzles, 64)
    server = Server({"TRM_MAX_BATCH": str(args.slots), "TRM_REQUEST_TIMEOUT_S": "120"}, args.model)
    try:
        server.wait_ready()
        result = asyncio.run(load_phase(server.base, puzzles, {args.low_priority: args.low_clients,
                                                        args.high_priority: args.high_clients},
                                        args.warmup_s, args.seconds, args.max_steps))
    finally:
        server.stop()
    low, high = result[str(args.low_priority)]["p50_s"], result[str(args.high_priority)]["p50_s"]
    ratio = round(low / high, 3) if low is not None and high else None
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k not in ("puzzles", "model")}
                      | {"model": args.model or "bundled", "tracebacks": server.tracebacks()},
                      "priority": result, "p50_ratio": ratio,
                      "target_p50_ratio_at_most_0.5": ratio is not None and ratio <= 0.5}, indent=2))


if __name__ == "__main__":
    main()
