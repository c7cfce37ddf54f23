"""ARC requests: recognise the task, run every augmented version of each test input, vote.

TRM answers an ARC task only through a puzzle-embedding row learned for that task (docs/MODEL_SPEC.md,
"why ARC needs a trained puzzle row"): the network never sees the demonstration pairs at test
time. So a posted task is matched by
content (`arc.task_fingerprint`) against the checkpoint's `arc_tasks` table (fingerprint -> the
augmented versions it was trained on, each with its puzzle id, dihedral transform and colour
permutation). Every version's transformed test input runs as its own row with that version's
puzzle id; the answers are mapped back through the inverse transform and voted (trm_core
arc_vote: votes, then mean sigmoid(q_halt)); the top two are the attempts, as in the original
evaluator. A task the model was not trained on is refused with a 422 that says so.

Not here: test-time adaptation for unseen tasks (service/tasks/adapt.py, POST /v1/arc/tasks); a task
it adapted to joins `arc_tasks` and is answered here like a trained one.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from service.engine.scheduler import Request
from service.registry import ArcVersion, LoadedModel
from service.tasks.admission import check_capacity, validate
from service.tasks.options import Items, RequestOptions, SolveContext, resolve_options
from service.tasks.submit import Disconnected, RowSpec, run_rows
from trm_core.tasks import TaskInputError, arc
from trm_core.tasks.arc_vote import ArcVoter, sigmoid


def _match_tasks(served: LoadedModel, items: Items) -> list[tuple[arc.ArcTask, list[ArcVersion]]]:
    """Parse every task and find its versions; one TaskInputError with all problems otherwise."""
    canvas = served.grid_shape[0]
    matched, errors = [], []
    for obj, loc in zip(items.values, items.locs(), strict=True):
        try:
            task = arc.parse_task(obj, loc=loc, max_size=canvas)
        except TaskInputError as e:
            errors += e.errors
            continue
        fp = arc.task_fingerprint(task)
        versions = served.arc_tasks.get(fp)
        if versions is None:
            errors.append((loc, f"model {served.name!r} was not trained on this task (fingerprint {fp[:16]}); "
                                "TRM answers an ARC task only through a puzzle embedding learned for it: POST "
                                "it to /v1/arc/tasks to adapt the model to it (an asynchronous job), then "
                                "solve it here"))
            continue
        matched.append((task, versions))  # the registry kept the first TRM_ARC_MAX_VERSIONS
    if errors:
        raise TaskInputError(errors)
    return matched


def _rows(matched: list[tuple[arc.ArcTask, list[ArcVersion]]], canvas: int) -> list[RowSpec]:
    """Row order: task, then test input, then version (results are read back in the same order)."""
    return [RowSpec(tokens=arc.encode(v.aug.apply(test_input), canvas=canvas), puzzle_id=v.puzzle_id)
            for task, versions in matched for test_input in task.test_inputs for v in versions]


def _mapped_back(v: ArcVersion, tokens: list[int], canvas: int) -> arc.Grid:
    pred = arc.decode(tokens, canvas=canvas)
    return v.aug.invert(pred) if pred else []


def _task_result(served: LoadedModel, task: arc.ArcTask, versions: list[ArcVersion], rows: list[Request],
                 t0: float) -> dict[str, Any]:
    """Vote per test input over the well-formed predictions only: a version whose answer is not a grid
    (the canvas origin left blank, so nothing decodes) is reported in `violations`, never as an attempt.
    `valid` is None: whether an ARC answer is right is unknowable without the task's solution."""
    canvas = served.grid_shape[0]
    voter = ArcVoter()
    attempts, votes, confidences, violations, trajectory, trajectory_conf = [], [], [], [], [], []
    for i, test_input in enumerate(task.test_inputs):
        its_rows = rows[i * len(versions):(i + 1) * len(versions)]
        malformed: Counter[str] = Counter()
        for v, r in zip(versions, its_rows, strict=True):
            pred = _mapped_back(v, r.answer, canvas)  # type: ignore[arg-type]
            problems = arc.verify(test_input, pred)
            if problems:
                malformed[problems[0]] += 1
            else:
                voter.add(str(i), test_input, pred, r.q_halt_logit)  # type: ignore[arg-type]
        violations += [f"test {i}: {n} of {len(versions)} versions gave no well-formed grid ({msg}); not voted"
                       for msg, n in malformed.items()]
        ranked = voter.ranked(str(i), test_input)[:2]
        ranked += ranked[:1] * (2 - len(ranked))  # every version agreed: attempt 2 repeats attempt 1
        attempts.append([c.grid for c in ranked])  # [] when no version gave a grid (named in violations)
        votes.append([c.votes for c in ranked])
        if ranked:
            confidences.append(ranked[0].mean_confidence)
        if its_rows[0].return_steps:
            trajectory.append([_mapped_back(versions[0], tokens, canvas) for tokens in its_rows[0].trajectory])
            trajectory_conf.append([sigmoid(q) for q in its_rows[0].trajectory_q_halt])
    result = {
        "attempts": attempts, "votes": votes, "valid": None, "violations": violations,
        "steps": max(r.steps for r in rows),
        "halt_reason": Counter(r.halt_reason for r in rows).most_common(1)[0][0],
        "confidence": sum(confidences) / len(confidences) if confidences else 0.0, "num_versions": len(versions),
        "timings": {"queue_s": max((r.admitted_time or r.arrival_time) - r.arrival_time for r in rows),
                    "compute_s": max((r.finished_time or 0.0) - (r.admitted_time or r.arrival_time) for r in rows),
                    "total_s": time.monotonic() - t0},
        "model": served.name,
    }
    if rows[0].return_steps:
        result["trajectory"] = trajectory
        result["trajectory_confidence"] = trajectory_conf
    return result


async def solve_arc(ctx: SolveContext, options: RequestOptions, items: Items, *, t0: float,
                    disconnected: Disconnected | None = None) -> dict[str, Any]:
    """Validate and match, enqueue every version row, await, vote. Single result or {"results": [...]}."""
    served = ctx.registry.get("arc", options.model)
    opts = resolve_options(options, served, ctx.settings, can_verify=False)
    check_capacity(len(items), served, items.field)  # every task needs a row: refuse before matching
    matched = await validate(_match_tasks, served, items, num_items=len(items))
    finished = await run_rows(served, _rows(matched, served.grid_shape[0]), opts, t0=t0, metrics=ctx.metrics,
                              disconnected=disconnected)
    results, start = [], 0
    for task, versions in matched:
        n = len(task.test_inputs) * len(versions)
        results.append(_task_result(served, task, versions, finished[start:start + n], t0))
        if ctx.metrics is not None:  # counted as it leaves; ARC has no rule check, so validity is unknown
            ctx.metrics.observe_answer(served.name, "arc", None)
        start += n
    return {"results": results} if items.is_batch else results[0]
