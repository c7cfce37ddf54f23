"""Every Prometheus metric of the service, defined in one place.

Each app gets its own `CollectorRegistry` (nothing is registered at import time), so tests can build
many apps in one process. Names carry the `trm_` prefix and a unit suffix; labels are bounded to
model, task and outcome-like values (HTTP status, halt reason, valid) - never request ids.
Metric names are a deployment contract (deploy/grafana, deploy/k8s HPA): keep them stable.

Gauges of scheduler state (queue depth, active slots, slots) and device memory are read at scrape
time from the workers, so they are never stale; everything else is updated as events happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from service.engine.scheduler import Request, RequestStatus, SchedulerStats, StepReport
from service.traffic import RecentRequests

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "step_buckets"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
OCCUPANCY_BUCKETS = tuple(i / 10 for i in range(1, 11))


def step_buckets(max_steps: int) -> tuple[float, ...]:
    """Every step count 1..16 (the paper's N_sup), then about x1.5 apart up to `max_steps`."""
    buckets = list(range(1, min(max_steps, 16) + 1))
    while buckets[-1] < max_steps:
        buckets.append(min(max_steps, int(buckets[-1] * 1.5)))
    return tuple(float(b) for b in buckets)


class _SchedulerCollector:
    """Scrape-time gauges from the workers (a custom collector: no update on the hot path)."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, SchedulerStats]]]) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # dynamic; nothing to check for name clashes at registration

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("trm_queue_depth", "Rows waiting for a slot", labels=["model"])
        active = GaugeMetricFamily("trm_active_slots", "Slots holding a running request", labels=["model"])
        slots = GaugeMetricFamily("trm_slots", "Slots in the pool (maximum batch)", labels=["model"])
        for name, s in self.source():
            depth.add_metric([name], s.num_waiting)
            active.add_metric([name], s.num_running)
            slots.add_metric([name], s.num_slots)
        yield from (depth, active, slots)
        if torch.cuda.is_available():
            mem = GaugeMetricFamily("trm_device_memory_bytes", "CUDA memory held by this process",
                                    labels=["device", "kind"])
            for i in range(torch.cuda.device_count()):
                mem.add_metric([f"cuda:{i}", "allocated"], torch.cuda.memory_allocated(i))
                mem.add_metric([f"cuda:{i}", "reserved"], torch.cuda.memory_reserved(i))
            yield mem


class _DeviceCollector:
    """Scrape-time gauges of how the models run on their device: CUDA graph buckets captured and
    fallen back to eager after the start-up self-check, and whether `auto` fell back to the CPU."""

    def __init__(self, graphs: Callable[[], Iterable[tuple[str, dict[str, list[int]] | None]]],
                 cpu_fallback: Callable[[], bool]) -> None:
        self.graphs, self.cpu_fallback = graphs, cpu_fallback

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        captured = GaugeMetricFamily("trm_cuda_graph_buckets", "Row buckets stepping by CUDA graph replay",
                                     labels=["model"])
        fallback = GaugeMetricFamily(
            "trm_cuda_graph_fallback_buckets", "Row buckets whose CUDA graph failed the start-up self-check "
            "(replay != eager step) and step eagerly", labels=["model"])
        for name, report in self.graphs():
            if report is not None:
                captured.add_metric([name], len(report["captured"]))
                fallback.add_metric([name], len(report["fallback"]))
        yield from (captured, fallback)
        yield GaugeMetricFamily("trm_device_fallback_cpu", "1 when TRM_DEVICE=auto chose the CPU although torch "
                                "is built for CUDA (no usable GPU)", value=1.0 if self.cpu_fallback() else 0.0)


class Metrics:
    """The app's metrics; `render()` is the /metrics body."""

    def __init__(self, max_steps: int) -> None:
        self.registry = CollectorRegistry()
        self.recent = RecentRequests()  # the last seconds of solve traffic, for GET /v1/stats
        r = self.registry
        self.request_duration = Histogram(
            "trm_request_duration_seconds", "HTTP solve request time, arrival to response", ["task"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("trm_requests", "HTTP solve requests by final status code", ["task", "status"],
                                registry=r)
        self.queue_wait = Histogram("trm_queue_wait_seconds", "Time a row waited for a slot", ["model", "task"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.act_steps = Histogram("trm_request_act_steps", "ACT steps a row ran before it halted",
                                   ["model", "task"], buckets=step_buckets(max_steps), registry=r)
        self.halts = Counter("trm_halts", "Rows that halted, by reason (learned, verified, budget)",
                             ["model", "task", "reason"], registry=r)
        self.finishes = Counter("trm_rows_evicted", "Rows that left without an answer, by reason",
                                ["model", "task", "reason"], registry=r)
        self.rows_finished = Counter(
            "trm_rows_finished", "Every row that left, by reason: halted, timeout, cancelled (client gone), aborted "
            "(shutdown, failed step), shed (refused before queueing: its deadline could not be met)",
            ["model", "task", "reason"], registry=r)
        self.answers = Counter("trm_answers", "Answers returned, by whether they passed the task's rule check",
                               ["model", "task", "valid"], registry=r)
        self.occupancy = Histogram("trm_slot_occupancy_ratio", "Fraction of slots running, per ACT step",
                                   ["model"], buckets=OCCUPANCY_BUCKETS, registry=r)
        self.step_duration = Histogram("trm_step_duration_seconds", "Wall time of one ACT step of the pool",
                                       ["model"], buckets=STEP_BUCKETS, registry=r)
        self.group_rows = Histogram("trm_group_rows", "Views (rows) a request's group ran before it finished",
                                    ["model", "task"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.group_row_steps = Histogram("trm_group_row_steps", "ACT steps summed over every row of a group",
                                         ["model", "task"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                                                     2048, 4096), registry=r)
        self.model_info = Info("trm_model", "Served models", ["model"], registry=r)
        self.ready = Gauge("trm_ready", "1 when every model is loaded and warmed up", registry=r)

    def watch_schedulers(self, source: Callable[[], Iterable[tuple[str, SchedulerStats]]]) -> None:
        self.registry.register(_SchedulerCollector(source))

    def watch_device(self, graphs: Callable[[], Iterable[tuple[str, dict[str, list[int]] | None]]],
                     cpu_fallback: Callable[[], bool]) -> None:
        """`graphs`: (model, its runner's graph report or None); `cpu_fallback`: auto chose the CPU in a
        CUDA build."""
        self.registry.register(_DeviceCollector(graphs, cpu_fallback))

    def observe_step(self, model: str, task: str, report: StepReport) -> None:
        """Called on the worker thread after every step (prometheus_client is thread-safe)."""
        if report.num_running:
            self.occupancy.labels(model).observe(report.num_running / report.num_slots)
            self.step_duration.labels(model).observe(report.duration_s)
        for r in report.finished:
            if r.admitted_time is not None:
                self.queue_wait.labels(model, task).observe(r.admitted_time - r.arrival_time)
            if r.status == RequestStatus.FINISHED_HALTED:
                self.act_steps.labels(model, task).observe(r.steps)
                self.halts.labels(model, task, r.halt_reason or "unknown").inc()
                self.group_rows.labels(model, task).observe(r.views_run)
                self.group_row_steps.labels(model, task).observe(r.row_steps)
            else:
                reason = r.status.name.removeprefix("FINISHED_").lower()
                self.finishes.labels(model, task, reason).inc()

    def observe_finish(self, model: str, task: str, r: Request) -> None:
        """Called once per finished request, whatever ended it (also waiting rows cancelled or aborted,
        which no step report sees); counts its rows (views)."""
        reason = "halted" if r.status == RequestStatus.FINISHED_HALTED else r.status.name.removeprefix(
            "FINISHED_").lower()
        self.rows_finished.labels(model, task, reason).inc(r.num_views)

    def observe_shed(self, model: str, task: str, num_rows: int) -> None:
        self.rows_finished.labels(model, task, "shed").inc(num_rows)

    def observe_request(self, task: str, status: int, duration_s: float) -> None:
        self.requests.labels(task, str(status)).inc()
        self.request_duration.labels(task).observe(duration_s)
        self.recent.add(status, duration_s)

    def observe_answer(self, model: str, task: str, is_valid: bool | None) -> None:
        """`is_valid` None (ARC: no rule check decides correctness) counts as valid="unknown"."""
        self.answers.labels(model, task, "unknown" if is_valid is None else "true" if is_valid else "false").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
