"""ARC voting over augmented versions, pass@K scoring and the Kaggle submission file.

Follows the original `evaluators/arc.py`: each prediction (and its test input) is mapped back
through its version's inverse transform, predictions are grouped by (task, original test
input), identical grids pool their votes, and candidates rank by vote count, then by mean
sigmoid(q_halt) (float64, computed by torch's kernel as there, see `sigmoid`); the top two are the
attempts; equal candidates keep the order in which they first arrived (a stable sort, as there).
A test pair counts for pass@K when its solution is among the top K; a task scores the fraction of
its test pairs solved; pass@K is the mean over tasks.

Differences from the original, on purpose: votes are never carried over between evaluations
unless the caller keeps the same `ArcVoter` (the original's `aggregated_voting` accumulated
across checkpoints by default), and a test input without any prediction gets the placeholder
attempt [[0]] in the submission instead of being left out (which misaligned the list).
Stdlib plus torch (imported when the first confidence is computed); the service uses it to answer
POST /v1/arc/solve.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import arc
from .arc import ArcTask, Grid
from .augment import ArcAug, parse_version_name

__all__ = ["Candidate", "ArcVoter", "score", "make_submission", "write_submission", "sigmoid"]

logger = logging.getLogger(__name__)
_Key = tuple[tuple[int, ...], ...]
PLACEHOLDER: Grid = [[0]]


# The original applies `.to(torch.float64).sigmoid()` to whole eval batches, which torch computes with
# its vector kernel; a lone element goes through the scalar kernel instead (libm exp), and the two differ
# by an ulp for ~3% of logits. A run of this many copies of the logit takes the vector kernel on every
# CPU torch dispatches to (a chunk is two vectors: 16 doubles with AVX-512).
_VECTOR_ROWS = 64


def sigmoid(x: float) -> float:
    """q_halt logit -> halting confidence, bit for bit as the original evaluator (torch float64 sigmoid).

    Exactness matters only for ties: two candidates with equal votes whose confidences tie exactly in
    the original (e.g. logits x, -x against y, -y) must tie here too, so arrival order decides; a
    hand-written float64 logistic differs by up to 3 ulp and flips such rankings.
    """
    import torch  # here, not at module level: voting on stored predictions needs no torch until now

    return torch.full((_VECTOR_ROWS,), float(x), dtype=torch.float64).sigmoid()[0].item()


def _key(grid: Sequence[Sequence[int]]) -> _Key:
    return tuple(tuple(row) for row in grid)


@dataclass(frozen=True)
class Candidate:
    """One distinct predicted grid for a test input, with its votes and mean halting confidence."""

    grid: Grid
    votes: int
    mean_confidence: float


class ArcVoter:
    """Collects predictions of all versions of ARC tasks and ranks them per test input."""

    def __init__(self) -> None:
        # (task, test input) -> predicted grid -> [votes, sum of sigmoid(q_halt)]; dicts keep
        # insertion order, so ties rank in the order predictions arrived, as the original's sort.
        self._votes: dict[tuple[str, _Key], dict[_Key, list[float]]] = {}

    def add(self, task: str, test_input: Grid, prediction: Grid, q_halt_logit: float) -> None:
        """One vote; `test_input` and `prediction` already in the task's original frame."""
        slot = self._votes.setdefault((task, _key(test_input)), {})
        stats = slot.setdefault(_key(prediction), [0, 0.0])
        stats[0] += 1
        stats[1] += sigmoid(float(q_halt_logit))

    def add_version(self, task: str, aug: ArcAug, model_input: Grid, model_prediction: Grid,
                    q_halt_logit: float) -> None:
        """One vote from version `aug`: input and prediction as the model saw/produced them."""
        prediction = aug.invert(model_prediction) if model_prediction else []
        self.add(task, aug.invert(model_input), prediction, q_halt_logit)

    def add_tokens(self, version_name: str, input_tokens: Sequence[int] | Any, pred_tokens: Sequence[int] | Any,
                   q_halt_logit: float) -> None:
        """One vote from a dataset row: the version's name (`identifiers.json`), its 900 input
        tokens and the model's 900 predicted tokens (argmax), both at offset 0 as in the test split."""
        task, k, perm = parse_version_name(version_name)
        self.add_version(task, ArcAug(k, perm), arc.decode(input_tokens), arc.decode(pred_tokens), q_halt_logit)

    def ranked(self, task: str, test_input: Grid) -> list[Candidate]:
        """Candidates for one test input, best first (votes, then mean confidence)."""
        slot = self._votes.get((task, _key(test_input)), {})
        cands = [Candidate([list(r) for r in g], int(v), s / v) for g, (v, s) in slot.items()]
        return sorted(cands, key=lambda c: (c.votes, c.mean_confidence), reverse=True)

    def attempts(self, task: str, test_input: Grid, k: int = 2) -> list[Grid]:
        """The top-k grids, padded to k by repeating the best (as the original); [] if no votes."""
        grids = [c.grid for c in self.ranked(task, test_input)[:k]]
        return grids + [grids[0]] * (k - len(grids)) if grids else []

    def tasks(self) -> set[str]:
        return {task for task, _ in self._votes}


def _as_task(task: Mapping[str, Any] | ArcTask) -> ArcTask:
    return task if isinstance(task, ArcTask) else arc.parse_task(task)


def score(voter: ArcVoter, tasks: Mapping[str, Mapping[str, Any] | ArcTask],
          ks: Iterable[int] = (1, 2)) -> dict[str, float]:
    """pass@K for each K: mean over tasks of the fraction of test pairs whose solution is in the top K.

    `tasks` maps task name -> task with test outputs (e.g. `test_puzzles.json`).
    """
    ks = list(ks)
    totals = dict.fromkeys(ks, 0.0)
    for name, raw in tasks.items():
        task = _as_task(raw)
        if task.test_outputs is None:
            raise ValueError(f"task {name!r} has no test outputs; pass@K needs the solutions")
        for test_input, solution in zip(task.test_inputs, task.test_outputs, strict=True):
            ranked = voter.ranked(name, test_input)
            if not ranked:
                logger.warning("task %s has a test input without predictions", name)
            for k in ks:
                if any(c.grid == solution for c in ranked[:k]):
                    totals[k] += 1.0 / len(task.test_inputs)
    n = max(len(tasks), 1)
    return {f"pass@{k}": totals[k] / n for k in ks}


def make_submission(voter: ArcVoter, tasks: Mapping[str, Mapping[str, Any] | ArcTask],
                    k: int = 2) -> dict[str, list[dict[str, Grid]]]:
    """Kaggle form: task -> one {"attempt_1": g, "attempt_2": g} per test input, in order."""
    out: dict[str, list[dict[str, Grid]]] = {}
    for name, raw in tasks.items():
        entries = []
        for test_input in _as_task(raw).test_inputs:
            grids = voter.attempts(name, test_input, k) or [PLACEHOLDER] * k
            entries.append({f"attempt_{i + 1}": g for i, g in enumerate(grids)})
        out[name] = entries
    return out


def write_submission(path: str | Path, submission: Mapping[str, Any]) -> None:
    """Write `submission.json` (compact JSON, as the competition expects)."""
    Path(path).write_text(json.dumps(submission, separators=(",", ":")))
