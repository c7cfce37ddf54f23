"""ARC test-time adaptation as asynchronous jobs: POST a task, poll the job, then solve it at once.

A model answers only the ARC tasks it has puzzle rows for; `training.adapt` trains rows for a new
task on a copy of the model (the served model is read, never written). Here each ARC model gets a
bounded job queue (TRM_ADAPT_QUEUE, 429 + Retry-After beyond it) and TRM_ADAPT_CONCURRENCY
adaptation threads, which run at a lower OS scheduling priority (TRM_ADAPT_NICE) than the serving
worker so that ACT steps of other requests keep their latency (bench/adapt.py measures it).

When a job succeeds its rows join the served puzzle table (`training.adapt.install_rows`: a new
table tensor swapped in with one attribute store, so a step on the worker thread sees either the
old or the new table, both valid for every id it holds) and the task's fingerprint joins the
model's `arc_tasks`, so `POST /v1/arc/solve` with the same task answers at once. With TRM_ADAPT_DIR
set the rows are saved as safetensors (`<dir>/<model>/<fingerprint>.safetensors`, tagged with the
checkpoint's sha256) and installed again on the next start, and the job records are kept beside
them (service/tasks/adapt_records.py): a restart keeps finished jobs and queues the queued ones
again. Finished jobs are kept TRM_ADAPT_TTL_S.

Not here: the training recipe (training/adapt.py), HTTP status mapping (service/api/errors.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from safetensors.torch import load_file, save_file

from service.engine.device import side_stream
from service.engine.stepper import follow_puzzle_table
from service.metrics import Metrics
from service.registry import ArcVersion, ModelRegistry, ServedModel
from service.settings import Settings
from service.tasks.adapt_records import JobRecords, from_record
from trm_core.checkpoint import file_sha256
from trm_core.tasks import arc
from trm_core.tasks.augment import ArcAug

if TYPE_CHECKING:  # training/ is imported when the first job runs: the service starts without it
    from training.adapt import AdaptConfig, AdaptProgress, AdaptResult

__all__ = ["AdaptJobs", "Job", "JobState", "AdaptQueueFull", "JobNotFound"]

logger = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
JobState = str
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACCURACY_BUCKETS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
ADAPT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class AdaptQueueFull(RuntimeError):
    """The model's adaptation queue is full (HTTP 429); `retry_after_s` estimates when a place frees."""

    def __init__(self, model: str, depth: int, retry_after_s: int) -> None:
        super().__init__(f"adaptation queue of model {model} is full ({depth} jobs waiting, TRM_ADAPT_QUEUE)")
        self.retry_after_s = retry_after_s


class JobNotFound(LookupError):
    """No such job (never existed, or expired after TRM_ADAPT_TTL_S) (HTTP 404)."""


@dataclass
class Job:
    id: str
    model: str
    fingerprint: str
    task: arc.ArcTask
    config: AdaptConfig
    state: JobState = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: AdaptProgress | None = None
    result: dict[str, Any] | None = None  # summary + attempts when succeeded (or from the cache)
    error: str | None = None
    cached: bool = False
    cancel_requested: bool = False

    @property
    def is_finished(self) -> bool:
        return self.state in (SUCCEEDED, FAILED, CANCELLED)

    def finish(self, state: JobState, error: str | None = None) -> None:
        """Stamp `finished` before the state changes: readers (the GET route, expiry) take no job
        thread lock, and a finished state seen without its time once made expiry drop the job."""
        self.finished, self.error = time.time(), error
        self.state = state

    def to_json(self) -> dict[str, Any]:
        p = self.progress
        out: dict[str, Any] = {
            "id": self.id, "state": self.state, "model": self.model, "fingerprint": self.fingerprint,
            "cached": self.cached, "created": self.created, "started": self.started, "finished": self.finished,
            "max_steps": self.config.max_steps, "max_seconds": self.config.max_seconds,
            "progress": {"step": p.step, "max_steps": p.max_steps, "elapsed_s": round(p.elapsed_s, 3),
                         "loss": p.loss} if p else None,
            "error": self.error,
        }
        r = self.result or {}
        for key in ("heldout_accuracy", "heldout_accuracy_before", "heldout_pass2", "heldout_pass2_before",
                    "steps", "seconds", "stopped", "loss_first", "loss_last", "num_versions", "attempts", "votes"):
            out[key] = r.get(key)
        return out


def _result_json(res: AdaptResult) -> dict[str, Any]:
    s = res.summary()
    return {
        "heldout_accuracy": s["heldout_exact"], "heldout_accuracy_before": s["heldout_exact_before"],
        "heldout_pass2": s["heldout_pass2"], "heldout_pass2_before": s["heldout_pass2_before"],
        "steps": s["steps"], "seconds": s["seconds"], "stopped": s["stopped"], "loss_first": s["loss_first"],
        "loss_last": s["loss_last"], "num_versions": s["num_versions"],
        "attempts": res.after.attempts, "votes": res.after.votes,
    }


class _ModelJobs:
    """Queue, threads and installed rows of one ARC model."""

    def __init__(self, owner: AdaptJobs, served: ServedModel) -> None:
        self.owner, self.served = owner, served
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.install_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.durations: deque[float] = deque(maxlen=16)
        self.cached_results: dict[str, dict[str, Any]] = {}  # fingerprint -> job result of an installed task
        self.records = JobRecords(self._dir())

    def start(self, concurrency: int) -> None:
        for i in range(concurrency):
            t = threading.Thread(target=self._run, name=f"trm-adapt-{self.served.name}-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self) -> None:
        try:  # Linux: a thread is a task with its own nice value; lower ours, keep the serving worker's
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.owner.settings.adapt_nice)
        except (AttributeError, OSError):
            pass
        while True:
            with self.cond:
                while not self.queue and not self.owner.is_closed:
                    self.cond.wait()
                if self.owner.is_closed:
                    return
                job = self.queue.popleft()
                job.state, job.started = RUNNING, time.time()
            self.owner.on_state(job)
            self._execute(job)

    def _execute(self, job: Job) -> None:
        from training.adapt import adapt_task

        served = self.served
        state, error = FAILED, None
        try:
            with side_stream(served.model.device):  # CUDA: not on the serving steps' stream
                res = adapt_task(served.model, job.task, job.config,
                                 progress=lambda p: setattr(job, "progress", p),
                                 should_stop=lambda: job.cancel_requested or self.owner.is_closed)
            if res.stopped == "cancelled":
                state = CANCELLED
            else:
                job.result = _result_json(res)
                self.install(job.fingerprint, res.rows, res.versions, job.result)
                self.save(job.fingerprint, res.rows, res.versions, job.result)
                state = SUCCEEDED
                self.durations.append(res.seconds)
                self.owner.observe_result(served.name, res)
        except Exception as e:  # a bad job must never take the thread down
            logger.exception("model %s: adaptation job %s failed", served.name, job.id)
            state, error = FAILED, f"{type(e).__name__}: {e}"
        job.finish(state, error)
        self.owner.on_state(job)

    # ---- rows ----------------------------------------------------------------------------------
    def install(self, fingerprint: str, rows: torch.Tensor, versions: list[ArcAug], result: dict[str, Any]) -> None:
        """Add the task's rows to the served table and the task to `arc_tasks` (one install at a time)."""
        from training.adapt import install_rows

        served = self.served
        with self.install_lock:
            if fingerprint in served.arc_tasks:
                return  # another job (or the cache) installed it already
            ids = install_rows(served.model, rows)
            follow_puzzle_table(served.engine.runner.model, served.model)
            keep = self.owner.settings.arc_max_versions
            self.cached_results[fingerprint] = result
            versions_served = [ArcVersion(pid, aug) for pid, aug in zip(ids, versions, strict=True)]
            served.arc_tasks[fingerprint] = versions_served[:keep]
        logger.info("model %s: installed %d adapted rows for task %s", served.name, len(ids), fingerprint[:16])

    def _dir(self) -> Path | None:
        root = self.owner.settings.adapt_dir
        return None if root is None else Path(root) / self.served.name

    def _sha(self) -> str:
        """The served weights' checkpoint hash: the registry's (it follows reloads), hashed here only when
        the model was loaded without one."""
        if self.served.sha256 is None:
            self.served.sha256 = file_sha256(self.served.path)
        return self.served.sha256

    def save(self, fingerprint: str, rows: torch.Tensor, versions: list[ArcAug], result: dict[str, Any]) -> None:
        folder = self._dir()
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": fingerprint, "checkpoint_sha256": self._sha(),
                "versions": json.dumps([{"k": v.k, "perm": "".join(map(str, v.perm))} for v in versions]),
                "result": json.dumps(result)}
        tmp = folder / f".{fingerprint}.tmp"
        save_file({"rows": rows.contiguous()}, str(tmp), metadata=meta)
        tmp.replace(folder / f"{fingerprint}.safetensors")  # atomic: a crash never leaves half a file

    def load_saved(self) -> int:
        """Install every saved task adapted for this very checkpoint; returns how many."""
        folder = self._dir()
        if folder is None or not folder.is_dir():
            return 0
        n = 0
        for path in sorted(folder.glob("*.safetensors")):
            try:
                from safetensors import safe_open

                with safe_open(str(path), "pt") as f:
                    meta = f.metadata() or {}
                if meta.get("checkpoint_sha256") != self._sha():
                    logger.info("skipping %s: adapted for another checkpoint", path.name)
                    continue
                rows = load_file(str(path))["rows"]
                ndim = self.served.config.puzzle_emb_ndim
                if rows.ndim != 2 or rows.shape[1] != ndim:
                    raise ValueError(f"rows of shape {tuple(rows.shape)}; the model's rows have {ndim} floats")
                versions = [ArcAug(int(v["k"]), tuple(int(c) for c in v["perm"])) for v in json.loads(meta["versions"])]
                if len(versions) != rows.shape[0]:
                    raise ValueError(f"{len(versions)} versions for {rows.shape[0]} rows")
                self.install(meta["fingerprint"], rows, versions, json.loads(meta.get("result", "{}")))
                n += 1
            except Exception as e:  # one bad file must not stop the service
                logger.warning("skipping adapted rows %s: %s", path, e)
        return n


class AdaptJobs:
    """All adaptation jobs of one app (one `_ModelJobs` per ARC model, started on first use)."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics | None = None) -> None:
        self.settings, self.registry = settings, registry
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, _ModelJobs] = {}
        self.lock = threading.Lock()
        self.is_closed = False
        self.jobs_total = self.seconds = self.accuracy = None
        if metrics is not None:
            r = metrics.registry
            self.jobs_total = Counter("trm_adapt_jobs", "Adaptation jobs that finished, by final state",
                                      ["model", "state"], registry=r)
            self.seconds = Histogram("trm_adapt_seconds", "Wall time of one adaptation's training loop",
                                     ["model"], buckets=ADAPT_BUCKETS, registry=r)
            self.accuracy = Histogram("trm_adapt_heldout_accuracy", "Held-out demonstration accuracy after "
                                      "adaptation (fraction of versions exactly right)", ["model"],
                                      buckets=ACCURACY_BUCKETS, registry=r)
            r.register(_JobsCollector(self))

    # ---- lifecycle -----------------------------------------------------------------------------
    def for_model(self, served: ServedModel) -> _ModelJobs:
        """The model's jobs, created (threads started, saved rows installed) on first use."""
        with self.lock:
            mj = self.models.get(served.name)
            if mj is None:
                mj = self.models[served.name] = _ModelJobs(self, served)
                mj.start(self.settings.adapt_concurrency)
                n = mj.load_saved()
                if n:
                    logger.info("model %s: %d adapted tasks restored from %s", served.name, n, self.settings.adapt_dir)
                self._restore_jobs(mj)
            return mj

    def _restore_jobs(self, mj: _ModelJobs) -> None:
        """The model's job records from TRM_ADAPT_DIR: finished ones kept, queued ones queued again.
        Called with `self.lock` held, after the saved rows are installed."""
        records = mj.records.load()
        if not records:
            return
        from training.adapt import AdaptConfig, AdaptProgress

        for record in records:
            try:
                job = from_record(record, Job, AdaptConfig, AdaptProgress)
            except Exception as e:  # one bad record must not stop the service
                logger.warning("skipping adaptation job record %s: %s", record.get("id"), e)
                continue
            self.jobs[job.id] = job
            if job.state == QUEUED:
                with mj.cond:
                    mj.queue.append(job)
                    mj.cond.notify()
            elif job.state != record["state"]:  # was running: now failed, with the reason
                mj.records.save(job)
        logger.info("model %s: %d adaptation jobs restored (%d queued again)", mj.served.name, len(records),
                    sum(j.state == QUEUED for j in mj.queue))

    def restore(self) -> None:
        """Install saved rows for every ARC model (before /v1/arc/solve matches a task)."""
        if self.registry.is_loaded:
            for served in self.registry.models.values():
                if served.task == "arc":
                    try:
                        self.for_model(served)
                    except Exception:  # e.g. the checkpoint file vanished: serve without the saved rows
                        logger.exception("model %s: could not restore adapted rows", served.name)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop: queued jobs are cancelled, running ones stop before their next step (nothing installed);
        waits up to `timeout_s` for the threads to exit."""
        self.is_closed = True
        for mj in self.models.values():
            with mj.cond:
                while mj.queue:
                    mj.queue.popleft().finish(CANCELLED)
                mj.cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for mj in self.models.values():
            for t in mj.threads:
                t.join(max(0.0, deadline - time.monotonic()))

    # ---- jobs ----------------------------------------------------------------------------------
    def _expire(self) -> None:
        horizon = time.time() - self.settings.adapt_ttl_s
        for job_id in [j.id for j in self.jobs.values()
                       if j.is_finished and j.finished is not None and j.finished < horizon]:
            job = self.jobs.pop(job_id)
            if job.model in self.models:
                self.models[job.model].records.delete(job_id)

    def submit(self, served: ServedModel, task: arc.ArcTask, *, max_steps: int | None = None,
               max_seconds: float | None = None) -> tuple[Job, bool]:
        """(job, is_new): a new queued job, or the queued/running job for the same task and model, or a
        finished one at once (`cached`) when the model already answers the task. Raises AdaptQueueFull."""
        from training.adapt import AdaptConfig

        s = self.settings
        mj = self.for_model(served)
        fp = arc.task_fingerprint(task)
        cfg = AdaptConfig(max_steps=min(max_steps or s.adapt_max_steps, s.adapt_max_steps),
                          max_seconds=min(max_seconds or s.adapt_max_s, s.adapt_max_s),
                          num_versions=s.adapt_versions, batch_size=s.adapt_batch_size)
        with self.lock:
            self._expire()
            for job in self.jobs.values():
                if job.model == served.name and job.fingerprint == fp and job.state in (QUEUED, RUNNING):
                    return job, False
            job = Job(uuid.uuid4().hex, served.name, fp, task, cfg)
            if fp in served.arc_tasks:
                job.state, job.cached, job.started, job.finished = SUCCEEDED, True, job.created, job.created
                job.result = mj.cached_results.get(fp)  # None for a task the checkpoint was trained on
                self.jobs[job.id] = job
                mj.records.save(job)
                return job, False
            with mj.cond:
                if len(mj.queue) >= s.adapt_queue:
                    raise AdaptQueueFull(served.name, len(mj.queue), self._retry_after(mj))
                mj.queue.append(job)
                self.jobs[job.id] = job
                mj.records.save(job)
                mj.cond.notify()
        return job, True

    def _retry_after(self, mj: _ModelJobs) -> int:
        mean = sum(mj.durations) / len(mj.durations) if mj.durations else self.settings.adapt_max_s
        return int(min(3600, max(1, math.ceil(mean * (1 + len(mj.queue)) / self.settings.adapt_concurrency))))

    def get(self, job_id: str) -> Job:
        with self.lock:
            self._expire()
            job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no adaptation job {job_id!r} (unknown, or finished more than "
                              f"{self.settings.adapt_ttl_s:g}s ago: TRM_ADAPT_TTL_S)")
        return job

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled now. Running: stops before its next step. Finished: unchanged."""
        job = self.get(job_id)
        mj = self.models.get(job.model)
        if mj is not None:
            with mj.cond:
                if job.state == QUEUED:
                    mj.queue.remove(job)
                    job.finish(CANCELLED)
                    self.on_state(job)
                elif job.state == RUNNING:
                    job.cancel_requested = True
        return job

    # ---- state changes and metrics -------------------------------------------------------------
    def on_state(self, job: Job) -> None:
        """A job changed state: count it when finished, and record it (TRM_ADAPT_DIR)."""
        if job.is_finished and self.jobs_total is not None:
            self.jobs_total.labels(job.model, job.state).inc()
        mj = self.models.get(job.model)
        if mj is None:
            return
        if self.is_closed and job.state == CANCELLED and not job.cancel_requested:
            mj.records.save(job, state=QUEUED)  # stopped by the shutdown, not the client: run it after a restart
        else:
            mj.records.save(job)

    def observe_result(self, model: str, res: AdaptResult) -> None:
        if self.seconds is not None:
            self.seconds.labels(model).observe(res.seconds)
        if self.accuracy is not None and res.after.heldout_exact is not None:
            self.accuracy.labels(model).observe(res.after.heldout_exact)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for job in list(self.jobs.values()):
            out[job.model, job.state] = out.get((job.model, job.state), 0) + 1
        return out


class _JobsCollector:
    """Scrape-time gauge of the jobs held, by model and state."""

    def __init__(self, jobs: AdaptJobs) -> None:
        self.jobs = jobs

    def describe(self) -> list:
        return []

    def collect(self):
        g = GaugeMetricFamily("trm_adapt_jobs_held", "Adaptation jobs held now (finished ones for TRM_ADAPT_TTL_S), "
                              "by state", labels=["model", "state"])
        counts = self.jobs.counts()
        models = {m for m, _ in counts} | set(self.jobs.models)
        for model in sorted(models):
            for state in STATES:
                g.add_metric([model, state], counts.get((model, state), 0))
        yield g
