"""Goodput from a cold start with a short deadline and clients that ignore Retry-After.

Starts `python -m service` (bundled Sudoku model unless --model) with TRM_REQUEST_TIMEOUT_S=--deadline-s,
and the moment /readyz answers 200, --clients closed-loop clients start posting one puzzle each
(default options) for --seconds. A client that gets 429 tries again --retry-s later, whatever the
Retry-After header says (the careless client: the server must protect itself). The first burst
arrives before any request has finished; what the deadline admission knows then is what the
start-up warm-up measured. Prints one JSON object:
  {"config": {...}, "statuses": {"200": n, "429": n, "504": n, ...}, "goodput_per_s",
   "first_second": {statuses in the first second}, "more_200_than_504": bool, "tracebacks": n}

    python bench/cold_start.py                 # 12 s of load after start-up
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
from soak import DEFAULT_PUZZLES, Server, load_puzzles  # noqa: E402


async def burst(base: str, puzzles: list[str], clients: int, seconds: float, retry_s: float) -> dict:
    statuses: Counter[str] = Counter()
    first: Counter[str] = Counter()
    t0 = time.monotonic()
    stop = t0 + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=clients + 8)) as http:
        async def client(i: int) -> None:
            rng = random.Random(100 + i)
            while time.monotonic() < stop:
                sent = time.monotonic()
                resp = await http.post("/v1/sudoku/solve", json={"puzzle": rng.choice(puzzles)})
                statuses[str(resp.status_code)] += 1
                if sent - t0 < 1.0:
                    first[str(resp.status_code)] += 1
                if resp.status_code in (429, 503):
                    await asyncio.sleep(retry_s)  # Retry-After deliberately ignored

        await asyncio.gather(*(client(i) for i in range(clients)))
    return {"statuses": dict(statuses), "first_second": dict(first),
            "goodput_per_s": round(statuses["200"] / seconds, 2),
            "more_200_than_504": statuses["200"] > statuses["504"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="TRM_MODELS for the server (default: the bundled checkpoints)")
    p.add_argument("--puzzles", type=Path, default=DEFAULT_PUZZLES)
    p.add_argument("--deadline-s", type=float, default=0.5, help="TRM_REQUEST_TIMEOUT_S")
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--retry-s", type=float, default=0.05, help="pause after a 429/503, ignoring Retry-After")
    args = p.parse_args()
    puzzles = load_puzzles(args.puzzles, 64)
    server = Server({"TRM_REQUEST_TIMEOUT_S": str(args.deadline_s)}, args.model)
    try:
        server.wait_ready()
        result = asyncio.run(burst(server.base, puzzles, args.clients, args.seconds, args.retry_s))
    finally:
        server.stop()
    config = {"deadline_s": args.deadline_s, "clients": args.clients, "seconds": args.seconds,
              "retry_s": args.retry_s, "model": args.model or "bundled"}
    print(json.dumps({"config": config, **result, "tracebacks": server.tracebacks()}, indent=2))


if __name__ == "__main__":
    main()
