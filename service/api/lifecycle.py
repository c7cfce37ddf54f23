"""Graceful shutdown on SIGTERM, run by the app before the HTTP server stops (service/api/server.py).

The order matters. uvicorn's own graceful shutdown closes the port first and cancels handlers
still running after its timeout (they answer 500 with a traceback); a drain in the app's lifespan
runs only after that and would see no traffic. So the app drains while the server still listens:

1. Draining starts: /readyz says 503, new solve requests get 503 problem+json with Retry-After,
   every response says `Connection: close`. This lasts at least TRM_PRESTOP_S, so that a load
   balancer sees the readiness change and clients get an answer instead of a refused connection.
2. Rows already queued or running keep stepping, until they finish or the drain budget is spent
   (TRM_DRAIN_TIMEOUT_S minus a reserve for the steps below, and minus two measured step times:
   a step in progress is never interrupted, and a full CPU pool can take a second per step); the
   rest are aborted and their requests answered 503 problem+json (never 500).
3. The answers are sent (requests in flight reach zero, bounded by the reserve), then the server
   is told to exit: it closes the port and idle connections and runs the (now empty) lifespan
   shutdown. The process exits within TRM_DRAIN_TIMEOUT_S of the signal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from service.api.middleware import ServerGuard
from service.engine.estimate import Load
from service.registry import ModelRegistry
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainPlan:
    """Time budget of one shutdown, all in seconds from the signal."""

    prestop_s: float  # keep listening (answering 503) at least this long
    rows_s: float  # in-flight rows may run until here
    answers_s: float  # answers of aborted rows are sent until here
    server_s: float  # what the HTTP server may take to close connections afterwards

    @classmethod
    def from_settings(cls, settings: Settings) -> DrainPlan:
        total = settings.drain_timeout_s
        reserve = min(1.5, 0.25 * total)  # answers + server close + interpreter exit
        rows = total - reserve
        return cls(prestop_s=min(settings.prestop_s, rows), rows_s=rows, answers_s=rows + reserve / 3,
                   server_s=reserve / 3)


async def drain_for_exit(registry: ModelRegistry, guard: ServerGuard, plan: DrainPlan) -> bool:
    """Steps 1-3 above, up to telling the server to exit. Returns True when no row was aborted."""
    t0 = time.monotonic()
    guard.is_draining = True
    logger.info("draining: readiness off, new requests get 503; in-flight rows have %.1fs", plan.rows_s)
    step_s = max((Load.of(m.scheduler.stats(), m.scheduler.step_times).step_s(max(1, m.scheduler.stats().num_running))
                  or 0.0 for m in registry.models.values()), default=0.0)
    is_clean = await asyncio.to_thread(registry.drain, max(0.0, plan.rows_s - 2 * step_s))  # is_draining first
    logger.info("rows %s after %.2fs", "finished" if is_clean else "past the budget were aborted (answered 503)",
                time.monotonic() - t0)
    while True:
        elapsed = time.monotonic() - t0
        if (guard.num_in_flight == 0 and elapsed >= plan.prestop_s) or elapsed >= plan.answers_s:
            break
        await asyncio.sleep(0.02)
    if guard.num_in_flight:
        logger.warning("%d request(s) still in flight when the server stops", guard.num_in_flight)
    logger.info("drained %s in %.2fs", "cleanly" if is_clean else "with aborted requests", time.monotonic() - t0)
    return is_clean
