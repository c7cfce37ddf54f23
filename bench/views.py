"""What `views` costs and buys: solve rate, compute and time per puzzle against the number of views.

Runs the serving engine without HTTP (service/tasks/offline.py, the `trm solve` path) with the bundled
Sudoku model on the first N unseen forum-hardest puzzles, for K views in --views, under verified
and learned halting. Prints one JSON object:
  {"config": {...}, "runs": [{"views", "halting", "solved", "solve_rate", "correct", "valid_answers",
   "mean_row_steps_solved", "row_steps_budget", "early_exit_ratio", "mean_row_steps", "s_per_puzzle"}]}
`solved` counts verified answers; `correct` checks them against the file's unique solution.
`early_exit_ratio` = mean row_steps per solved puzzle / (views x max_steps) (1.0 = no early exit).

    python bench/views.py --limit 100 --views 1,8,32,128,256
    python bench/views.py --skip 44766 --limit 200 --views 1,128 --max-steps 16 --halting verified  # model card
    python bench/views.py --fairness     # 20 single-view requests beside one views=256 request
    python bench/views.py --staged-vs-all --limit 8 --views 128   # staged waves against all views at once

Fairness: the time for a batch of 20 single-view requests (learned halting) on an idle engine, and
again while a views=256 verified request on a puzzle the model does not solve occupies it; the
ratio is `busy_over_idle` (target <= 2). Both through the real worker thread, no HTTP.

Staged vs all (--staged-vs-all): each puzzle alone on an engine with a slot per view and no
running-rows cap, K views (the first value of --views), verified halting: once with every view at
once, once in waves (--wave: B, B, 2B, 4B, ... while unsolved; TRM_VIEW_WAVE). Per mode: solved,
mean row_steps (the compute), seconds per puzzle (mean, p50, and the max over the puzzles); then
the compute saved, the added latency, and whether every puzzle solved by one mode is solved by the
other with the same answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.tasks.grid import SUDOKU, build_row  # noqa: E402
from service.tasks.offline import load_served, solve_grids  # noqa: E402
from trm_core.tasks import sudoku  # noqa: E402
from trm_core.tasks.puzzle_csv import read_puzzle_csv  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sudoku" / "forum_hardest_1905_11plus_test.csv.gz"
DEFAULT_MODEL = ROOT / "trm_core" / "pretrained" / "sudoku.safetensors"


def run(model: Path, data: Path, limit: int, views_list: list[int], haltings: list[str], max_steps: int,
        slots: int, max_view_rows: int, skip: int = 0) -> dict:
    rows = read_puzzle_csv(data, limit=skip + limit)[skip:]
    puzzles = [sudoku.parse(r.question) for r in rows]
    answers = [sudoku.parse(r.answer) for r in rows]
    runs = []
    for halting in haltings:
        for k in views_list:
            served = load_served(model, num_slots=slots, max_queue=max(4096, k))
            t0 = time.perf_counter()
            results = list(tqdm(solve_grids(served, SUDOKU, puzzles, halting=halting, max_steps=max_steps, views=k,
                                            max_view_rows=max_view_rows),
                                total=len(puzzles), desc=f"{halting} views={k}", file=sys.stderr, leave=False))
            elapsed = time.perf_counter() - t0
            solved = [r for r in results if r["valid"] and (halting != "verified" or r["halt_reason"] == "verified")]
            correct = [r for r, a in zip(results, answers, strict=True) if r["valid"] and r["solution"] == a]
            solved_steps = [r["row_steps"] for r in solved]
            mean_solved = statistics.fmean(solved_steps) if solved_steps else None
            runs.append({
                "views": k, "halting": halting, "puzzles": len(puzzles), "solved": len(solved),
                "solve_rate": len(solved) / len(puzzles), "correct": len(correct),
                "valid_answers": sum(r["valid"] for r in results),
                "mean_row_steps_solved": mean_solved, "row_steps_budget": k * max_steps,
                "early_exit_ratio": None if mean_solved is None else mean_solved / (k * max_steps),
                "mean_row_steps": statistics.fmean(r["row_steps"] for r in results),
                "mean_views_run": statistics.fmean(r["views"] for r in results),
                "s_per_puzzle": elapsed / len(puzzles),
            })
            print(json.dumps(runs[-1]), file=sys.stderr)
    return {"config": {"model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
                       "data": data.name, "skip": skip, "limit": limit, "max_steps": max_steps, "slots": slots,
                       "max_view_rows": max_view_rows, "torch_threads": torch.get_num_threads()},
            "runs": runs}


def fairness(model: Path, data: Path, slots: int, max_view_rows: int, max_steps: int) -> dict:
    import threading

    from service.engine.loop import EngineLoop
    from service.engine.scheduler import Request

    rows = read_puzzle_csv(data, limit=21)
    puzzles = [sudoku.parse(r.question) for r in rows]

    def batch_time(with_group: bool) -> dict:
        served = load_served(model, num_slots=slots, max_queue=4096)
        worker = EngineLoop("bench", served.engine)
        worker.start()
        done = threading.Event()
        finished: list[Request] = []
        group_done = threading.Event()
        if with_group:
            spec = build_row(SUDOKU, served, puzzles[0], "verified", 256)
            group = Request(request_id="group", inputs=torch.as_tensor(spec.tokens, dtype=torch.int32),
                            max_steps=max_steps, halting="verified", accept=spec.accept, map_back=spec.map_back,
                            max_running_rows=max_view_rows, on_finish=lambda r: group_done.set())
            worker.submit([group])
            worker.wait_until(lambda s: s.num_running >= min(slots, max_view_rows), 30)

        def on_finish(r: Request) -> None:
            finished.append(r)
            if len(finished) == 20:
                done.set()

        singles = [Request(request_id=f"s{i}", inputs=torch.tensor(SUDOKU.encode(p), dtype=torch.int32),
                           max_steps=max_steps, halting="learned", on_finish=on_finish)
                   for i, p in enumerate(puzzles[1:21])]
        t0 = time.perf_counter()
        worker.submit(singles)
        done.wait(600)
        elapsed = time.perf_counter() - t0
        group_running = with_group and not group_done.is_set()
        worker.drain(0.0 if with_group else 10.0)
        return {"batch_s": elapsed, "group_still_running": group_running}

    idle, busy = batch_time(False), batch_time(True)
    return {"idle_batch_s": idle["batch_s"], "busy_batch_s": busy["batch_s"],
            "busy_over_idle": busy["batch_s"] / idle["batch_s"],
            "group_still_running_when_batch_done": busy["group_still_running"],
            "slots": slots, "max_view_rows": max_view_rows, "max_steps": max_steps}


def staged_vs_all(model: Path, data: Path, limit: int, k: int, max_steps: int, wave: int) -> dict:
    from service.engine.scheduler import Request

    rows = read_puzzle_csv(data, limit=limit)
    puzzles = [sudoku.parse(r.question) for r in rows]
    served = load_served(model, num_slots=k, max_queue=k)
    modes: dict[str, dict] = {}
    for mode, first_wave in (("all", None), ("staged", wave)):
        results = []
        for i, grid in enumerate(tqdm(puzzles, desc=mode, file=sys.stderr, leave=False)):
            spec = build_row(SUDOKU, served, grid, "verified", k)
            r = Request(request_id=f"{mode}{i}", inputs=torch.as_tensor(spec.tokens, dtype=torch.int32),
                        max_steps=max_steps, halting="verified", accept=spec.accept, map_back=spec.map_back,
                        first_wave=first_wave)
            t0 = time.perf_counter()
            served.engine.scheduler.add_request(r)
            served.engine.run_until_idle()
            results.append({"seconds": time.perf_counter() - t0, "solved": r.halt_reason == "verified",
                            "answer": r.answer if r.halt_reason == "verified" else None,
                            "row_steps": r.row_steps, "views_run": r.views_run})
        seconds = [x["seconds"] for x in results]
        modes[mode] = {"solved": sum(x["solved"] for x in results),
                       "mean_row_steps": statistics.fmean(x["row_steps"] for x in results),
                       "mean_views_run": statistics.fmean(x["views_run"] for x in results),
                       "mean_s": statistics.fmean(seconds), "p50_s": statistics.median(seconds), "max_s": max(seconds),
                       "_results": results}
    pairs = list(zip(modes["all"].pop("_results"), modes["staged"].pop("_results"), strict=True))
    a, st = modes["all"], modes["staged"]
    return {"config": {"model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
                       "data": data.name, "puzzles": len(puzzles), "views": k, "max_steps": max_steps, "wave": wave,
                       "slots": k, "torch_threads": torch.get_num_threads()},
            "all": a, "staged": st,
            "compute_saved": 1 - st["mean_row_steps"] / a["mean_row_steps"],
            "added_latency_mean_s": st["mean_s"] - a["mean_s"], "latency_ratio_mean": st["mean_s"] / a["mean_s"],
            "same_solved_puzzles": all(x["solved"] == y["solved"] for x, y in pairs),
            "same_answers": all(x["answer"] == y["answer"] for x, y in pairs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--limit", type=int, default=100, help="first N puzzles of the file (after --skip)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N rows (44766: the model card's held-out slice, the last 1,000 rows)")
    p.add_argument("--views", default="1,8,32,128,256", help="comma-separated K values")
    p.add_argument("--halting", default="verified,learned", help="comma-separated halting modes")
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--slots", type=int, default=64, help="engine slots (TRM_MAX_BATCH)")
    p.add_argument("--max-view-rows", type=int, default=16, help="running rows per group (TRM_MAX_VIEW_ROWS)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fairness", action="store_true", help="measure 20 single requests beside views=256 instead")
    p.add_argument("--staged-vs-all", action="store_true", help="staged waves against all views at once instead")
    p.add_argument("--wave", type=int, default=16, help="first wave of --staged-vs-all (TRM_VIEW_WAVE)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.staged_vs_all:
        k = int(args.views.split(",")[0])
        print(json.dumps(staged_vs_all(args.model, args.data, args.limit, k, args.max_steps, args.wave), indent=2))
        return
    if args.fairness:
        print(json.dumps(fairness(args.model, args.data, args.slots, args.max_view_rows, args.max_steps), indent=2))
        return
    out = run(args.model, args.data, args.limit, [int(v) for v in args.views.split(",")],
              args.halting.split(","), args.max_steps, args.slots, args.max_view_rows, args.skip)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
