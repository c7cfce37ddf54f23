"""Test-time adaptation: teach a trained ARC model a task it has never seen, then answer it.

A TRM answers an ARC task only through puzzle-embedding rows learned for that task's augmented
versions (docs/MODEL_SPEC.md, "why ARC needs a trained puzzle row"); a new task has none.
`adapt_task` gives it some, the way training did:

1. Versions: the identity plus augmentations (dihedral x colour permutation), planned by the ARC
   builder's `plan_versions` (duplicates by content dropped).
2. A copy of the model whose puzzle table holds a blank row and one row per new version, each
   starting from the mean of the trained table's rows (what the original does when it grows a
   table on load). The served model is never touched: the rows are installed later
   (`install_rows`, by whoever serves the model).
3. Training data: the augmented demonstration pairs, translated on the canvas as the builder
   translates training examples (one example per version stays at the origin). One demonstration
   pair is held out (when the task has two or more) to measure what adaptation learned.
4. The training loop itself is `training.trainer.Trainer`: the persistent ACT carry with deep
   supervision, the training loss (`act_loss`), halting with exploration, sign-SGD on the used
   puzzle rows; the network is frozen unless `train_network` (then AdamATan2 trains the copy's
   network too). It stops at the step budget, the time budget, or when `should_stop()` says so.
5. Prediction: every version's test inputs run `halt_max_steps` ACT steps (the evaluator's
   protocol); answers are mapped back and voted (`trm_core.tasks.arc_vote`) to two attempts.

The network mode's result is a whole adapted network; the service adapts rows only, so the rows can
join the served table and the same task then answers through `/v1/arc/solve`.
CLI: `trm arc-solve TASK.json --model M [--steps N]` (`main`) writes the ARC Prize submission.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_core import TRM
from trm_core.loss import IGNORE_LABEL
from trm_core.model import PuzzleEmbedding
from trm_core.tasks import arc
from trm_core.tasks.arc import ArcTask, Grid
from trm_core.tasks.arc_vote import ArcVoter
from trm_core.tasks.augment import ArcAug

from .config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .data.build_arc import plan_versions
from .ddp import DistInfo
from .evaluate import evaluate_model
from .examples import Examples

__all__ = ["AdaptConfig", "AdaptProgress", "AdaptResult", "adapt_task", "adapted_copy", "install_rows",
           "predict_versions", "BudgetError"]

log = logging.getLogger(__name__)


class BudgetError(ValueError):
    """An adaptation option out of range (the message names it)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Budget and recipe of one adaptation. Defaults suit a small CPU model; a GPU run of a paper-size
    model would use more versions (the original trains ~1000 per task) and more steps."""

    max_steps: int = 200  # optimizer (= ACT) steps
    max_seconds: float = 600.0  # wall-time budget of the training loop
    num_versions: int = 8  # identity + (num_versions - 1) augmentations
    batch_size: int = 16  # ACT slots of the adaptation loop
    puzzle_emb_lr: float = 1e-2  # sign-SGD on the new rows, as in training
    puzzle_emb_weight_decay: float = 0.1
    train_network: bool = False  # also train the copy's network (AdamATan2); the result is then a model
    lr: float = 1e-4  # network LR when train_network
    weight_decay: float = 0.1
    halt_exploration_prob: float = 0.1
    holdout: bool = True  # hold out one demonstration pair to measure adaptation
    translate: bool = True  # random canvas offsets as the builder's training split
    measure_before: bool = True  # also predict before training (held-out accuracy and attempts)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "num_versions", "batch_size"):
            if getattr(self, name) < 1:
                raise BudgetError(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_seconds <= 0:
            raise BudgetError(f"max_seconds={self.max_seconds} must be positive")


@dataclass(frozen=True)
class AdaptProgress:
    step: int
    max_steps: int
    elapsed_s: float
    loss: float  # training loss of this step per row (lm + q_halt, summed over the rows / batch)


@dataclass
class Evaluation:
    """Predictions of every version for the held-out pair and the test inputs, voted."""

    heldout_exact: float | None  # fraction of versions whose held-out answer is exactly right
    heldout_pass2: float | None  # 1.0 when the held-out output is among the two voted attempts
    heldout_cells: float | None  # mean over versions of the held-out output's cells right (0 for a wrong shape)
    attempts: list[list[Grid]]  # per test input: up to two voted attempts (well-formed grids only)
    votes: list[list[int]]


@dataclass
class AdaptResult:
    fingerprint: str
    versions: list[ArcAug]
    rows: torch.Tensor  # float [V, puzzle_emb_ndim]: the trained row of each version (CPU)
    after: Evaluation
    before: Evaluation | None
    losses: list[float]
    steps: int
    seconds: float  # the training loop's wall time
    stopped: str  # "steps" | "time" | "cancelled"
    heldout_index: int | None  # which demonstration pair was held out
    model: TRM | None = None  # the adapted copy, when the network was trained too
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (what bench/ and the job API report)."""
        b = self.before
        return {
            "fingerprint": self.fingerprint, "num_versions": len(self.versions), "steps": self.steps,
            "seconds": round(self.seconds, 3), "stopped": self.stopped, "heldout_index": self.heldout_index,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
            "heldout_exact_before": b.heldout_exact if b else None, "heldout_exact": self.after.heldout_exact,
            "heldout_pass2_before": b.heldout_pass2 if b else None, "heldout_pass2": self.after.heldout_pass2,
            "heldout_cells_before": b.heldout_cells if b else None, "heldout_cells": self.after.heldout_cells,
        }


# ---- the puzzle table ------------------------------------------------------------------------
def mean_row(model: TRM) -> torch.Tensor:
    """The mean of the trained table's rows: where every new row starts (the original's reset on growth)."""
    if model.puzzle_emb is None:
        raise ValueError("the model has no puzzle embedding (puzzle_emb_ndim=0); nothing to adapt")
    return model.puzzle_emb.weights.detach().float().mean(0)


def adapted_copy(model: TRM, num_rows: int, *, train_network: bool = False) -> TRM:
    """A copy of `model` whose puzzle table is [blank row, `num_rows` rows at the mean of the trained table].

    Only the rows the adaptation trains are carried (a paper-size table is ~1e6 rows: copying it per
    task would cost gigabytes); local id i (1..num_rows) becomes a served id at `install_rows`.
    The network is shared by reference when it is not trained (frozen, never written), else deep-copied.
    """
    start = mean_row(model)
    cfg = model.config.replace(num_puzzle_identifiers=1 + num_rows)
    clone = TRM(cfg).to(model.device)
    state = {k: v for k, v in model.state_dict().items() if k != "puzzle_emb.weights"}
    clone.load_state_dict(state, strict=False)
    if not train_network:
        # share the frozen network's tensors instead of holding a second copy
        for name, _ in list(clone.named_parameters()):
            owner = clone.get_submodule(name.rpartition(".")[0]) if "." in name else clone
            setattr(owner, name.rpartition(".")[2], torch.nn.Parameter(model.get_parameter(name).detach(),
                                                                       requires_grad=False))
    weights = torch.zeros(1 + num_rows, start.shape[0], dtype=clone.puzzle_emb.weights.dtype, device=model.device)
    weights[1:] = start.to(weights.dtype)
    clone.puzzle_emb.weights = weights
    return clone


class ExtendedPuzzleTable(PuzzleEmbedding):
    """A served puzzle table plus rows added after loading: ids below the base table's size read it,
    the others read the extension.

    A paper-size ARC table is 1.8-2.5 GB; growing it with `torch.cat` would hold two copies for a
    moment and copy gigabytes per adapted task. Installing rows replaces only the small extension
    (one attribute store), and the base table is never written.
    """

    def __init__(self, base: torch.Tensor, extra: torch.Tensor) -> None:
        super().__init__(0, base.shape[1])
        self.weights = base
        self.register_buffer("extra", extra)

    @property
    def num_rows(self) -> int:
        return self.weights.shape[0] + self.extra.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        base, extra = self.weights, self.extra  # read once: an install may replace `extra` meanwhile
        n = base.shape[0]
        rows = base[ids.clamp(max=n - 1)]
        if extra.shape[0]:  # shapes only: no device sync in the step path
            rows = torch.where((ids >= n)[:, None], extra[(ids - n).clamp(0, extra.shape[0] - 1)], rows)
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_(True)
            self.local_weights, self.local_ids = rows, ids
        return rows


def install_rows(model: TRM, rows: torch.Tensor) -> list[int]:
    """Add `rows` [V, D] to the served model's puzzle table; returns their ids.

    The rows go to an extension table (`ExtendedPuzzleTable`): the first install swaps the model's
    table module for one that holds the loaded table by reference, later installs replace the
    extension. Each is one attribute store, never an in-place write, so a step running on another
    thread reads either the old rows or the new ones, both valid for every id it was given.
    Callers serialise installs (the old extension is read to build the new one).
    """
    emb = model.puzzle_emb
    if emb is None:
        raise ValueError("the model has no puzzle embedding")
    if isinstance(emb, ExtendedPuzzleTable):
        first = emb.num_rows
        emb.extra = torch.cat([emb.extra, rows.to(device=emb.extra.device, dtype=emb.extra.dtype)])
    else:
        first = emb.weights.shape[0]
        model.puzzle_emb = ExtendedPuzzleTable(emb.weights, rows.to(device=emb.weights.device,
                                                                   dtype=emb.weights.dtype).clone())
    model.config = model.config.replace(num_puzzle_identifiers=first + rows.shape[0])
    return list(range(first, first + rows.shape[0]))


# ---- data --------------------------------------------------------------------------------------
def plan(task: ArcTask, num_versions: int, seed: int) -> list[ArcAug]:
    """Identity + distinct augmentations of the task, as the ARC builder plans them."""
    pairs = [(np.array(i, np.uint8), np.array(o, np.uint8)) for i, o in task.train]
    pairs += [(np.array(g, np.uint8), np.zeros((1, 1), np.uint8)) for g in task.test_inputs]
    return plan_versions(pairs, num_versions - 1, np.random.default_rng(seed))


def demo_examples(pairs: list[tuple[Grid, Grid]], versions: list[ArcAug], canvas: int, *, translate: bool,
                  rng: np.random.Generator) -> Examples:
    """Training examples: every version (local puzzle id 1..V) x every pair, one group per version."""
    inputs, labels, pidx = [], [], [0]
    for aug in versions:
        at_origin = int(rng.integers(len(pairs)))
        for j, (i, o) in enumerate(pairs):
            x, y = aug.apply(i), aug.apply(o)
            offset = (0, 0)
            if translate and j != at_origin:
                offset = (int(rng.integers(0, canvas - max(len(x), len(y)) + 1)),
                          int(rng.integers(0, canvas - max(len(x[0]), len(y[0])) + 1)))
            inputs.append(arc.encode(x, offset=offset, canvas=canvas))
            labels.append(arc.encode(y, offset=offset, canvas=canvas))
        pidx.append(len(inputs))
    n = len(versions)
    lab = np.array(labels, np.int16)
    return Examples(np.array(inputs, np.uint8), lab, np.arange(1, n + 1, dtype=np.int32), np.array(pidx, np.int32),
                    np.arange(n + 1, dtype=np.int32),
                    {"vocab_size": arc.VOCAB_SIZE, "seq_len": canvas * canvas, "num_puzzle_identifiers": n + 1})


def _query_examples(grids: list[Grid], versions: list[ArcAug], canvas: int) -> Examples:
    """One example per (grid, version) at offset 0, local puzzle ids 1..V, labels ignored."""
    inputs = [arc.encode(v.apply(g), canvas=canvas) for g in grids for v in versions]
    n = len(inputs)
    pids = np.array([1 + vi for _ in grids for vi in range(len(versions))], np.int32)
    return Examples(np.array(inputs, np.uint8).reshape(n, canvas * canvas),
                    np.full((n, canvas * canvas), IGNORE_LABEL, np.int16), pids, np.arange(n + 1, dtype=np.int32),
                    np.arange(n + 1, dtype=np.int32), {})


# ---- prediction --------------------------------------------------------------------------------
def predict_versions(model: TRM, grids: list[Grid], versions: list[ArcAug], *, batch_size: int = 64,
                     ) -> list[list[tuple[Grid, float]]]:
    """Per grid: each version's answer mapped back to the task's frame, with its q_halt logit.

    Runs the evaluator's protocol (every row `halt_max_steps` steps, eval mode) through
    `evaluate_model`; local puzzle id 1 + i is version i (an `adapted_copy`).
    """
    canvas = model.config.grid_height
    res = evaluate_model(model, _query_examples(grids, versions, canvas), batch_size=batch_size, predictions=True)
    preds, q = res["preds"], res["q_halt"].tolist()
    out: list[list[tuple[Grid, float]]] = []
    for gi in range(len(grids)):
        answers = []
        for vi, v in enumerate(versions):
            row = gi * len(versions) + vi
            grid = arc.decode(preds[row].tolist(), canvas=canvas)
            answers.append((v.invert(grid) if grid else [], q[row]))
        out.append(answers)
    return out


def vote(grids: list[Grid], answers: list[list[tuple[Grid, float]]]) -> tuple[list[list[Grid]], list[list[int]]]:
    """Two attempts per grid from the versions' answers (malformed answers are not voted)."""
    voter = ArcVoter()
    attempts, votes = [], []
    for gi, (grid, its) in enumerate(zip(grids, answers, strict=True)):
        for pred, q in its:
            if pred and not arc.verify(grid, pred):
                voter.add(str(gi), grid, pred, q)
        ranked = voter.ranked(str(gi), grid)[:2]
        ranked += ranked[:1] * (2 - len(ranked))
        attempts.append([c.grid for c in ranked])
        votes.append([c.votes for c in ranked])
    return attempts, votes


def evaluate_adapted(model: TRM, task: ArcTask, versions: list[ArcAug], heldout: tuple[Grid, Grid] | None,
                     batch_size: int = 64) -> Evaluation:
    grids = list(task.test_inputs) + ([heldout[0]] if heldout else [])
    answers = predict_versions(model, grids, versions, batch_size=batch_size)
    attempts, votes = vote(grids, answers)
    exact = pass2 = cells = None
    if heldout is not None:
        its = answers[-1]
        exact = sum(pred == heldout[1] for pred, _ in its) / len(its)
        pass2 = float(heldout[1] in attempts[-1])
        cells = sum(_cell_accuracy(pred, heldout[1]) for pred, _ in its) / len(its)
        attempts, votes = attempts[:-1], votes[:-1]
    return Evaluation(exact, pass2, cells, attempts, votes)


def _cell_accuracy(pred: Grid, target: Grid) -> float:
    """Fraction of the target's cells predicted right; 0 when the shapes differ."""
    if len(pred) != len(target) or any(len(a) != len(b) for a, b in zip(pred, target, strict=True)):
        return 0.0
    total = sum(len(row) for row in target)
    return sum(x == y for a, b in zip(pred, target, strict=True) for x, y in zip(a, b, strict=True)) / total


# ---- the adaptation ----------------------------------------------------------------------------
def _trainer(clone: TRM, data: Examples, cfg: AdaptConfig, run_dir: str):
    from .trainer import Trainer  # heavy (distributed, tqdm, tensorboard probe): only when adapting

    tcfg = TrainConfig(
        model=clone.config, data=DataConfig(path="<in memory>"),
        optim=OptimConfig(lr=cfg.lr, lr_warmup_steps=0, weight_decay=cfg.weight_decay, beta2=0.95,
                          puzzle_emb_lr=cfg.puzzle_emb_lr, puzzle_emb_weight_decay=cfg.puzzle_emb_weight_decay,
                          ema=False),
        run=RunConfig(dir=run_dir, seed=cfg.seed, global_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
                      halt_exploration_prob=cfg.halt_exploration_prob, resume=False, progress=False,
                      tensorboard=False, compile=False, checkpoint_interval=0, log_interval=10**9))
    return Trainer(tcfg, DistInfo(device=clone.device), train_data=data, model=clone)


def adapt_task(model: TRM, task: ArcTask | dict[str, Any], cfg: AdaptConfig = AdaptConfig(), *,
               progress: Callable[[AdaptProgress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> AdaptResult:
    """Adapt a copy of `model` to `task` within `cfg`'s budget and answer its test inputs (see module doc).

    `model` is read, never written (safe while it serves on another thread). `progress` is called
    after every step; `should_stop` is polled before every step (cancellation).
    """
    if not isinstance(task, ArcTask):
        task = arc.parse_task(task)
    if model.config.task != "arc":
        raise ValueError(f"adaptation is for ARC models; this model's task is {model.config.task!r}")
    canvas = model.config.grid_height
    for g in [g for pair in task.train for g in pair] + list(task.test_inputs):
        if len(g) >= canvas + 1 or len(g[0]) >= canvas + 1:
            raise ValueError(f"a {len(g)}x{len(g[0])} grid does not fit this model's {canvas}x{canvas} canvas")
    rng = np.random.default_rng(cfg.seed)
    versions = plan(task, cfg.num_versions, cfg.seed)
    pairs = list(task.train)
    held_i = int(rng.integers(len(pairs))) if cfg.holdout and len(pairs) >= 2 else None
    heldout = pairs[held_i] if held_i is not None else None
    train_pairs = [p for i, p in enumerate(pairs) if i != held_i]

    clone = adapted_copy(model, len(versions), train_network=cfg.train_network)
    before = evaluate_adapted(clone, task, versions, heldout) if cfg.measure_before else None
    data = demo_examples(train_pairs, versions, canvas, translate=cfg.translate, rng=rng)
    losses: list[float] = []
    stopped = "steps"
    with tempfile.TemporaryDirectory(prefix="trm-adapt-") as run_dir:
        trainer = _trainer(clone, data, cfg, run_dir)
        t0 = time.perf_counter()
        while trainer.step < cfg.max_steps:
            if should_stop is not None and should_stop():
                stopped = "cancelled"
                break
            if time.perf_counter() - t0 >= cfg.max_seconds:
                stopped = "time"
                break
            trainer.train_step()
            losses.append(float(trainer.last_loss) / cfg.batch_size)
            if progress is not None:
                progress(AdaptProgress(trainer.step, cfg.max_steps, time.perf_counter() - t0, losses[-1]))
        seconds = time.perf_counter() - t0
        trainer.close()
    clone.eval()
    after = evaluate_adapted(clone, task, versions, heldout)
    log.info("adapted %d versions in %d steps (%.1fs, %s): loss %.3f -> %.3f, held-out exact %s -> %s",
             len(versions), len(losses), seconds, stopped, losses[0] if losses else float("nan"),
             losses[-1] if losses else float("nan"), before.heldout_exact if before else None, after.heldout_exact)
    return AdaptResult(
        fingerprint=arc.task_fingerprint(task), versions=versions,
        rows=clone.puzzle_emb.weights[1:].detach().float().cpu().clone(), after=after, before=before,
        losses=losses, steps=len(losses), seconds=seconds, stopped=stopped, heldout_index=held_i,
        model=clone if cfg.train_network else None)


# ---- CLI: trm arc-solve --------------------------------------------------------------------------
def _load_tasks(path: Path) -> dict[str, dict[str, Any]]:
    """One task file (name = file stem) or a Kaggle-style `*_challenges.json` (solutions beside it used
    for scoring when present)."""
    from .data.build_arc import load_subset

    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and "train" in raw and "test" in raw:
        return {path.stem: raw}
    if path.name.endswith("_challenges.json"):
        return load_subset(path)
    if isinstance(raw, dict) and all(isinstance(v, dict) and "train" in v for v in raw.values()):
        return raw
    raise ValueError(f"{path} is neither an ARC task ({{'train': [...], 'test': [...]}}) nor a challenges file")


def main(argv: list[str] | None = None) -> int:
    """`trm arc-solve TASK.json [--model M] [--steps N]`: adapt to each task, write the ARC Prize submission."""
    p = argparse.ArgumentParser(prog="trm arc-solve", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("tasks", type=Path, help="an ARC task .json, or a *_challenges.json with many tasks")
    p.add_argument("--model", type=Path, required=True, help="an ARC checkpoint (.safetensors)")
    p.add_argument("--steps", type=int, default=AdaptConfig.max_steps, help="training steps per task")
    p.add_argument("--seconds", type=float, default=AdaptConfig.max_seconds, help="training wall time per task")
    p.add_argument("--versions", type=int, default=AdaptConfig.num_versions, help="augmented versions per task")
    p.add_argument("--batch-size", type=int, default=AdaptConfig.batch_size, help="ACT slots of the loop")
    p.add_argument("--train-network", action="store_true", help="also train (a copy of) the network")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--out", type=Path, default=Path("submission.json"), help="submission file to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    from trm_core import load_checkpoint
    from trm_core.tasks.arc_vote import PLACEHOLDER, write_submission

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        tasks = _load_tasks(args.tasks)
        model, _ = load_checkpoint(args.model, device=args.device)
        cfg = AdaptConfig(max_steps=args.steps, max_seconds=args.seconds, num_versions=args.versions,
                          batch_size=args.batch_size, train_network=args.train_network)
    except (OSError, ValueError) as e:
        print(f"trm arc-solve: {e}", file=sys.stderr)  # noqa: T201 - the one-line failure
        return 2
    model.eval()
    submission: dict[str, list[dict[str, Grid]]] = {}
    report: dict[str, Any] = {}
    solved = scored = 0.0
    for name, raw in tqdm(tasks.items(), desc="tasks", unit="task", disable=len(tasks) == 1):
        task = arc.parse_task(raw, loc=(str(args.tasks), name), max_size=model.config.grid_height)
        bar = tqdm(total=cfg.max_steps, desc=name, unit="step", leave=False)

        def on_step(prog: AdaptProgress, bar: Any = bar) -> None:
            bar.update(prog.step - bar.n)
            bar.set_postfix(loss=f"{prog.loss:.3f}")

        res = adapt_task(model, task, cfg, progress=on_step)
        bar.close()
        submission[name] = [{"attempt_1": (a or [PLACEHOLDER])[0], "attempt_2": (a or [PLACEHOLDER])[-1]}
                            for a in res.after.attempts]
        summary = res.summary()
        if task.test_outputs is not None:
            hits = [sol in a for sol, a in zip(task.test_outputs, res.after.attempts, strict=True)]
            summary["pass@2"] = sum(hits) / len(hits)
            solved += summary["pass@2"]
            scored += 1
        report[name] = summary
    write_submission(args.out, submission)
    out = {"tasks": len(tasks), "submission": str(args.out),
           "pass@2": solved / scored if scored else None, "per_task": report}
    print(json.dumps(out))  # noqa: T201 - the command's output
    return 0
