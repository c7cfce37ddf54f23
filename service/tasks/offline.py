"""The serving engine without a server: solve many grids in one process (`trm solve`, benchmarks).

The same path an HTTP request takes after validation, minus asyncio and HTTP: the model is loaded
and checked by the registry's loader (`load_model`, `build_engine`), each puzzle becomes a row
through service/tasks/grid.py and a scheduler request through `make_request`, and the answers are
built as the server builds them. The engine is stepped on this thread, with a bounded number of rows
queued, and results come out in input order as soon as every earlier one is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.engine.core import Engine
from service.engine.scheduler import Request, RequestStatus
from service.registry import LoadedModel, build_engine, load_model, resolve_device
from service.settings import Settings
from service.tasks.grid import GridTask, build_result, build_row
from service.tasks.options import ResolvedOptions
from service.tasks.submit import make_request

__all__ = ["OfflineModel", "load_served", "solve_grids"]


@dataclass(kw_only=True)
class OfflineModel(LoadedModel):
    """A loaded model with an engine that the caller steps (no loop thread)."""

    engine: Engine


def load_served(path: str | Path, *, num_slots: int = 64, max_queue: int = 4096, stall_steps: int = 0,
                device: str = "cpu") -> OfflineModel:
    """A checkpoint loaded and checked as the server loads it, with an engine of `num_slots` slots."""
    # max_wait_s=0: the caller steps when it has rows; a hold for a fuller first batch would only spin
    settings = Settings(max_batch=num_slots, max_queue=max_queue, stall_steps=stall_steps, max_wait_s=0.0,
                        device=device)
    loaded = load_model(Path(path).stem, Path(path), settings, resolve_device(settings.device))
    return OfflineModel(**vars(loaded), engine=build_engine(loaded, settings))


def solve_grids(served: OfflineModel, task: GridTask, grids: Iterable[Any], *, halting: str = "learned",
                max_steps: int | None = None, views: int = 1, max_view_rows: int | None = 16,
                view_wave: int | None = 16) -> Iterator[dict]:
    """Yield one response dict (the HTTP response body) per grid, in input order.

    Grids must already be parsed (`task.parse`). `view_wave` is the server's TRM_VIEW_WAVE (None: every
    view at once). Keeps at most about two pools' worth of rows queued, so a file of any length runs in
    bounded memory.
    """
    engine, sched = served.engine, served.engine.scheduler
    opts = ResolvedOptions(halting=halting, max_steps=max_steps or served.config.halt_max_steps, views=views,
                           max_view_rows=max_view_rows, view_wave=view_wave)
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
            r = make_request(str(next_in), build_row(task, served, grid, halting, views), opts)
            sched.add_request(r)
            pending[next_in] = (grid, r, time.monotonic())
            next_in += 1
        while next_out in pending and pending[next_out][1].status.is_finished:
            grid, r, t0 = pending.pop(next_out)
            if r.status != RequestStatus.FINISHED_HALTED:
                raise RuntimeError(f"puzzle {next_out} did not finish ({r.status.name})")
            yield build_result(task, served, grid, r, t0)
            next_out += 1
        if exhausted and not pending:
            return
        engine.step()
