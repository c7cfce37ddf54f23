"""GET /v1/stats: queue, slots and the last seconds of traffic as JSON (the web page's live panel)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, MetricsDep, RegistryDep
from service.api.schemas import PROBLEM_RESPONSES, ModelStats, StatsResponse

router = APIRouter(tags=["system"])


@router.get("/v1/stats", response_model=StatsResponse, dependencies=[ApiKeyDep],
            responses={401: PROBLEM_RESPONSES[401]})
async def stats(registry: RegistryDep, metrics: MetricsDep) -> StatsResponse:
    """Scheduler state per model (as the trm_queue_depth / trm_active_slots / trm_slots gauges) and, over
    the last `recent.window_s` seconds, solve requests per second and exact p50/p90/p99 latency.

    For people and quick checks; dashboards and alerts should use /metrics.
    """
    tasks = {m.name: m.task for m in registry.models.values()}
    models = {name: ModelStats(task=tasks.get(name, ""), queue_depth=s.num_waiting, active_slots=s.num_running,
                               slots=s.num_slots, steps=s.num_steps, mean_occupancy=s.mean_occupancy)
              for name, s in registry.scheduler_stats()}
    return StatsResponse(
        uptime_s=time.monotonic() - metrics.recent.started,
        queue_depth=sum(m.queue_depth for m in models.values()),
        active_slots=sum(m.active_slots for m in models.values()),
        slots=sum(m.slots for m in models.values()), recent=metrics.recent.snapshot(), models=models)
