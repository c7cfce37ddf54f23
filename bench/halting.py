"""Halting modes on the bundled Sudoku model, through the HTTP app: how many answers are valid, how many steps.

The first N real hard test puzzles (`forum_hardest_1905_11plus_test.csv.gz`, as given, nothing
revealed) are posted as one batch per mode (`learned`, `fixed`, `verified`) to an in-process app
(create_app + httpx). Prints one JSON line: per mode the number of valid answers and the mean steps.

    python bench/halting.py                 # the halting table of docs/views.md
    python bench/halting.py --num 1000 --checkpoint my.safetensors
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

import httpx
import torch

from service.api.app import create_app
from service.settings import Settings
from trm_core.tasks.puzzle_csv import read_puzzle_csv

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "sudoku" / "forum_hardest_1905_11plus_test.csv.gz"
DEFAULT_MODEL = ROOT / "trm_core" / "pretrained" / "sudoku.safetensors"
MODES = ("learned", "fixed", "verified")


async def measure(checkpoint: Path, puzzles: list[str]) -> dict[str, dict[str, float]]:
    settings = Settings(models=[f"sudoku={checkpoint}"], device="cpu", max_batch=256, max_queue=len(puzzles) * 2,
                        max_wait_s=0.0, request_timeout_s=3600)
    app = create_app(settings)
    out: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=3600) as client:
            for mode in MODES:
                resp = await client.post("/v1/sudoku/solve", json={"puzzles": puzzles, "halting": mode})
                resp.raise_for_status()
                results = resp.json()["results"]
                out[mode] = {"valid": sum(r["valid"] for r in results),
                             "mean_steps": statistics.fmean(r["steps"] for r in results)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--num", type=int, default=200, help="the first N puzzles of the CSV")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    puzzles = [row.question for row in read_puzzle_csv(args.csv, limit=args.num)]
    result = asyncio.run(measure(args.checkpoint, puzzles))
    print(json.dumps({"bench": "halting", "checkpoint": str(args.checkpoint), "csv": args.csv.name,
                      "num": len(puzzles), **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
