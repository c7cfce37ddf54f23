"""Evaluation: exact and cell accuracy, q_halt accuracy, halting under the learned policy vs fixed steps.

Every batch runs halt_max_steps ACT steps in eval mode (the original's evaluation: no early exit),
and for each row we also record the first step at which the learned halting head fired
(q_halt > 0), so one pass gives both numbers:
- `exact_accuracy`, `cell_accuracy`, `q_halt_accuracy`: at the fixed last step (the paper's numbers);
- `learned_exact_accuracy`, `mean_halt_step`: the answer at the learned halting step (the product's
  default policy, trm_core.halting.learned_halt) and how many steps it took on average.
ARC adds `pass@1`/`pass@2` through the tasks helper's voting evaluator (trm_core.tasks.arc_vote)
when the data is a full ARC build (identifiers.json + test_puzzles.json beside the splits).

CLI: `trm eval MODEL DATA [--limit N] [--reveal F] [--batch-size B] [--device D]` prints one JSON line.
DATA is a built dataset directory (its test split) or a raw Sudoku CSV/CSV.gz.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trm_core import TRM, load_checkpoint
from trm_core.halting import halt_mask
from trm_core.loss import IGNORE_LABEL

from .examples import DataError, Examples, load_examples
from .stream import reveal_givens

__all__ = ["evaluate_model", "eval_inputs", "main"]

log = logging.getLogger(__name__)

_SUMS = ("count", "exact", "cell", "q_halt_correct", "learned_exact", "halt_step")


_MAZE_SUMS = ("valid_path_rate", "shortest_path_rate", "learned_valid_path_rate", "learned_shortest_path_rate")


def maze_rule_sums(puzzles: np.ndarray, preds: np.ndarray, learned_preds: np.ndarray, height: int,
                   width: int) -> torch.Tensor:
    """Counts of answers that are valid S-G routes (`maze.verify`) and shortest ones (`maze.is_shortest`).

    Exact match with the label undercounts a maze solver: a maze can have several shortest paths and
    the label marks only one. The puzzle is the maze as given (never a revealed input).
    """
    from trm_core.tasks import maze

    out = torch.zeros(len(_MAZE_SUMS), dtype=torch.float64)
    for x, fixed, learned in zip(puzzles, preds, learned_preds, strict=True):
        puzzle = maze.decode(x.tolist(), height=height, width=width)
        for j, pred in ((0, fixed), (2, learned)):
            answer = maze.decode(pred.tolist(), height=height, width=width)
            if not maze.verify(puzzle, answer):
                out[j] += 1
                out[j + 1] += maze.is_shortest(puzzle, answer)
    return out


def eval_inputs(data: Examples, reveal: float, seed: int = 0) -> np.ndarray:
    """The evaluation inputs, with a deterministic fraction of the cells to fill in revealed (curriculum)."""
    if reveal <= 0:
        return data.inputs
    rng = np.random.default_rng([seed, 0xE7A1])
    return reveal_givens(data.inputs, np.where(data.labels < 0, 0, data.labels).astype(data.inputs.dtype),
                         reveal, rng)


@torch.no_grad()
def evaluate_model(model: TRM, data: Examples, *, batch_size: int = 256, reveal: float = 0.0,
                   max_steps: int | None = None, rank: int = 0, world_size: int = 1,
                   progress: bool = False, predictions: bool = False) -> dict[str, Any]:
    """Metrics of `model` (in eval mode for the call) on `data`, summed across ranks when distributed.

    Rank r evaluates examples r, r+W, ...; the sums are all-reduced so every rank returns the totals.
    Maze models also get rule metrics (`valid_path_rate`, `shortest_path_rate` and their `learned_`
    versions, see `maze_rule_sums`). With `predictions=True` the result also holds `preds`
    (int [N_local, L]), `q_halt` ([N_local]) and `index` ([N_local]) for task-specific scoring (ARC voting).
    """
    was_training = model.training
    model.eval()
    device = model.device
    steps_max = max_steps or model.config.halt_max_steps
    inputs_all = eval_inputs(data, reveal)
    pids_all = data.example_puzzle_ids()
    index = np.arange(rank, data.num_examples, world_size)
    sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)
    kept_preds, kept_q = [], []
    maze_rules = model.config.task == "maze"  # score the route itself, not just the label match
    rule_sums = torch.zeros(len(_MAZE_SUMS), dtype=torch.float64)
    bar = tqdm(range(0, len(index), batch_size), desc="eval", disable=not progress, leave=False)
    for start in bar:
        idx = index[start:start + batch_size]
        B = len(idx)
        inputs = torch.as_tensor(inputs_all[idx].astype(np.int64), device=device)
        labels = torch.as_tensor(data.labels[idx].astype(np.int64), device=device)
        pids = torch.as_tensor(pids_all[idx].astype(np.int64), device=device)
        carry = model.empty_carry(B)
        carry = model.reset_rows(carry, torch.ones(B, dtype=torch.bool, device=device), inputs, pids)
        valid = labels != IGNORE_LABEL
        num_valid = valid.sum(-1).clamp_min(1)
        learned_pred = torch.zeros_like(labels)
        halt_step = torch.zeros(B, dtype=torch.int64, device=device)
        for _ in range(steps_max):
            carry, out = model.step(carry)
            pred = out.logits.argmax(-1)
            # rows whose learned policy fires now (first time), or at the last step
            fire = (halt_step == 0) & halt_mask(out.q_halt_logits, carry.steps, steps_max, mode="learned")
            learned_pred = torch.where(fire[:, None], pred, learned_pred)
            halt_step = torch.where(fire, carry.steps.long(), halt_step)
        hits = (pred == labels) & valid
        exact = hits.sum(-1) == valid.sum(-1)
        learned_exact = ((learned_pred == labels) | ~valid).all(-1)
        has_label = valid.any(-1)  # padded rows (no valid label) are not counted, as the original
        sums += torch.stack([
            has_label.sum(), (exact & has_label).sum(), ((hits.sum(-1) / num_valid) * has_label).sum(),
            (((out.q_halt_logits >= 0) == exact) & has_label).sum(), (learned_exact & has_label).sum(),
            (halt_step * has_label).sum(),
        ]).to(torch.float64)
        if predictions:
            kept_preds.append(pred.to(torch.uint8).cpu())  # tokens < 256; ARC-1 test is ~4e5 x 900
            kept_q.append(out.q_halt_logits.float().cpu())
        if maze_rules:
            rule_sums += maze_rule_sums(data.inputs[idx], pred.cpu().numpy(), learned_pred.cpu().numpy(),
                                        model.config.grid_height, model.config.grid_width)
    if maze_rules:
        sums = torch.cat([sums, rule_sums.to(device)])
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(sums)
    if maze_rules:
        sums, rule_totals = sums[:len(_SUMS)], sums[len(_SUMS):].tolist()
    s = dict(zip(_SUMS, sums.tolist(), strict=True))
    n = max(1.0, s["count"])
    result: dict[str, Any] = {
        "count": int(s["count"]), "exact_accuracy": s["exact"] / n, "cell_accuracy": s["cell"] / n,
        "q_halt_accuracy": s["q_halt_correct"] / n, "learned_exact_accuracy": s["learned_exact"] / n,
        "mean_halt_step": s["halt_step"] / n, "max_steps": steps_max,
    }
    if maze_rules:
        result.update({key: v / n for key, v in zip(_MAZE_SUMS, rule_totals, strict=True)})
    if predictions:
        result["preds"] = torch.cat(kept_preds) if kept_preds else torch.zeros(0, data.seq_len, dtype=torch.uint8)
        result["q_halt"] = torch.cat(kept_q) if kept_q else torch.zeros(0)
        result["index"] = torch.as_tensor(index)
    model.train(was_training)
    return result


def _gather_rows(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """Concatenate a per-rank [n_r, ...] tensor over ranks (n_r differ by at most one: padded, then cut)."""
    if world_size <= 1 or not dist.is_initialized():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    width = int(max(int(x) for x in sizes))
    padded = t.new_zeros((width, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(k)] for p, k in zip(parts, sizes, strict=True)])


def arc_pass_at_k(result: dict[str, Any], data: Examples, root: str | Path, *, world_size: int = 1,
                  ks: tuple[int, ...] = (1, 2)) -> dict[str, float]:
    """ARC pass@K of `evaluate_model(..., predictions=True)` output through the tasks helper's voter.

    Every test example is one augmented version of a task (its puzzle id names the version in
    `<root>/identifiers.json`); predictions are mapped back to the original frame, identical grids
    pool their votes, candidates rank by (votes, mean sigmoid(q_halt)), and `<root>/test_puzzles.json`
    holds the solutions. All ranks return the same numbers.
    """
    from trm_core.tasks.arc_vote import ArcVoter, score

    root = Path(root)
    names = json.loads((root / "identifiers.json").read_text())
    tests = json.loads((root / "test_puzzles.json").read_text())
    device = result["preds"].device
    preds = _gather_rows(result["preds"].to(device), world_size).cpu().numpy()
    q_halt = _gather_rows(result["q_halt"].to(device), world_size).cpu().numpy()
    index = _gather_rows(result["index"].to(device), world_size).cpu().numpy()
    example_pids = data.example_puzzle_ids()
    voter = ArcVoter()
    for pred, q, i in zip(preds, q_halt, index, strict=True):
        voter.add_tokens(names[int(example_pids[i])], data.inputs[i].tolist(), pred.tolist(), float(q))
    return score(voter, tests, ks=ks)


def is_arc_build(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "identifiers.json").is_file() and (p / "test_puzzles.json").is_file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trm eval", description="Evaluate a model file on a dataset; "
                                     "prints one JSON line of metrics.")
    parser.add_argument("model", help="model .safetensors (trm export output or a bundled model)")
    parser.add_argument("data", help="built dataset dir (its test split) or raw Sudoku .csv/.csv.gz")
    parser.add_argument("--split", default="test", help="split of a built dataset (default: test)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate the first N puzzles (0 = all)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N puzzles (after --limit counts)")
    parser.add_argument("--reveal", type=float, default=0.0,
                        help="fraction of the cells to fill in (Sudoku blanks, maze path cells) revealed from "
                             "the answer (seeded; 0 = as given)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=0, help="ACT steps (0 = the model's halt_max_steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, meta = load_checkpoint(args.model, device=args.device)
        data = load_examples(args.data, args.split, args.limit + args.skip if args.limit else 0)
        if args.skip:
            data = data.split_tail(len(data.puzzle_identifiers) - args.skip)[1]
    except (OSError, ValueError, DataError) as e:
        print(f"trm eval: {e}", file=sys.stderr)  # noqa: T201 - CLI failure line
        return 2
    cfg = model.config
    if data.seq_len != cfg.seq_len:
        print(f"trm eval: data has seq_len {data.seq_len} but the model expects {cfg.seq_len}",  # noqa: T201
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    arc = cfg.task == "arc" and is_arc_build(args.data) and not args.limit and not args.skip
    result = evaluate_model(model, data, batch_size=args.batch_size, reveal=args.reveal,
                            max_steps=args.max_steps or None, progress=sys.stderr.isatty(), predictions=arc)
    if arc:
        result.update(arc_pass_at_k(result, data, args.data))
        for key in ("preds", "q_halt", "index"):
            result.pop(key)
    result.update({"model": str(args.model), "data": str(args.data), "limit": args.limit, "skip": args.skip,
                   "reveal": args.reveal, "seconds": round(time.perf_counter() - t0, 2), "task": cfg.task})
    print(json.dumps(result, sort_keys=True))  # noqa: T201 - the CLI's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
