"""The serving engine without a server: solve many grids in one process (`trm solve`, benchmarks).

Exactly the path an HTTP request takes after validation (service/tasks/grid.py builds the rows and
the answers; service/engine/core.py steps them), minus asyncio and HTTP: puzzles are fed to one engine
with a bounded number of rows queued, the engine is stepped on this thread, and results come out
in input order as soon as every earlier one is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from service.engine.core import Engine
from service.engine.scheduler import Request, RequestStatus
from service.registry import ServedModel
from service.settings import Settings
from service.tasks.grid import GridTask, build_result, build_row
from trm_core import load_checkpoint

__all__ = ["load_served", "solve_grids"]


def load_served(path: str | Path, *, num_slots: int = 64, max_queue: int = 4096, stall_steps: int = 0,
                device: str = "cpu") -> ServedModel:
    """A checkpoint as the registry serves it (the server's runner defaults), with an engine but no
    worker thread."""
    model, meta = load_checkpoint(path, device=device)
    task = str(meta.get("task") or model.config.task)
    defaults = Settings.model_fields
    engine = Engine.for_model(model, num_slots, max_queue, stall_steps=stall_steps,
                              runner_options={"cpu_chunk_rows": defaults["cpu_chunk_rows"].default,
                                              "cuda_graphs": defaults["cuda_graphs"].default})
    return ServedModel(name=Path(path).stem, path=Path(path), task=task, model=model, meta=meta, engine=engine,
                       worker=None)  # type: ignore[arg-type]  # no thread: the caller steps the engine


def solve_grids(served: ServedModel, task: GridTask, grids: Iterable[Any], *, halting: str = "learned",
                max_steps: int | None = None, views: int = 1, max_view_rows: int | None = 16,
                view_wave: int | None = 16) -> Iterator[dict]:
    """Yield one response dict (the HTTP response body) per grid, in input order.

    Grids must already be parsed (`task.parse`). `view_wave` is the server's TRM_VIEW_WAVE (None: every
    view at once). Keeps at most about two pools' worth of rows queued,
    so a file of any length runs in bounded memory.
    """
    engine, sched = served.engine, served.engine.scheduler
    budget = max_steps or served.config.halt_max_steps
    limit = max(2 * sched.num_slots, views)
    grids = iter(grids)
    pending: dict[int, tuple[Any, Request, float]] = {}  # index -> (grid, request, t0)
    next_in = next_out = 0
    exhausted = False
    while True:
        while not exhausted and sched.stats().num_waiting + views <= min(limit, sched.max_queue):
            grid = next(grids, None)
            if grid is None:
                exhausted = True
                break
            spec = build_row(task, served, grid, halting, views)
            r = Request(request_id=str(next_in), inputs=torch.as_tensor(spec.tokens, dtype=torch.int32),
                        max_steps=budget, halting=halting, accept=spec.accept, map_back=spec.map_back,
                        max_running_rows=max_view_rows if spec.num_rows > 1 else None,
                        first_wave=view_wave if spec.num_rows > 1 else None)
            sched.add_request(r)
            pending[next_in] = (grid, r, time.monotonic())
            next_in += 1
        while next_out in pending and pending[next_out][1].status.is_finished:
            grid, r, t0 = pending.pop(next_out)
            if r.status != RequestStatus.FINISHED_HALTED:
                raise RuntimeError(f"puzzle {next_out} did not finish ({r.status.name})")
            yield build_result(task, served, grid, r, t0, None)
            next_out += 1
        if exhausted and not pending:
            return
        engine.step()

