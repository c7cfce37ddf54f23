"""The thread that drives one model's scheduler, so torch work never runs on the event loop.

The loop: sleep on a condition until the scheduler has something to do (a submit or cancel
notifies it; no busy-waiting), then `engine.step()` outside the lock so that requests can be
queued while the model computes. Observers (`wait_until`, drain) wake on the same condition after
every step. A step that raises (e.g. CUDA out of memory) aborts the requests it held, rebuilds the
slot pool, and the worker carries on: the service stays up.

Not here: asyncio. Results leave through `Request.on_finish`; the HTTP side bridges them into its
event loop with `loop.call_soon_threadsafe` (service/tasks/submit.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from service.engine.core import Engine
from service.engine.scheduler import Request, RequestStatus, SchedulerStats, StepReport

logger = logging.getLogger(__name__)


class WorkerClosedError(RuntimeError):
    """The worker is draining or stopped and takes no new requests (HTTP 503)."""


class EngineLoop:
    """Owns the stepping thread of one model's engine."""

    def __init__(self, name: str, engine: Engine,
                 on_step: Callable[[StepReport], None] | None = None) -> None:
        self.name, self.engine, self.on_step = name, engine, on_step
        self.scheduler = engine.scheduler
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._is_closed = False  # no new requests
        self._is_stopping = False  # thread exits at the top of its loop
        self._snapshot = engine.scheduler.stats()  # stats as of the last completed step, submit or cancel
        self.num_failed_steps = 0
        self._calls: list[tuple[Callable[[], None], threading.Event, list[BaseException]]] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"trm-worker-{self.name}", daemon=True)
        self._thread.start()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Refuse new requests; queued and running ones continue (first half of a drain)."""
        with self._cond:
            self._is_closed = True

    def drain(self, timeout_s: float) -> bool:
        """Close, wait up to `timeout_s` for in-flight requests to finish, abort the rest, stop.

        Returns True when everything finished in time.
        """
        self.close()
        is_done = self.wait_until(lambda s: s.num_waiting == 0 and s.num_running == 0, timeout_s)
        with self._cond:
            self._is_stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        aborted = self.scheduler.abort_all(RequestStatus.FINISHED_ABORTED)
        if aborted:
            logger.warning("model %s: drain timed out after %.1fs; aborted %d request(s)",
                           self.name, timeout_s, len(aborted))
        return is_done and not aborted

    # ---- requests (event-loop thread) --------------------------------------------------------
    def submit(self, requests: Sequence[Request]) -> None:
        """Queue requests all-or-nothing. Raises WorkerClosedError or QueueFullError."""
        with self._cond:
            if self._is_closed or not self.is_alive:
                raise WorkerClosedError(f"model {self.name} is not taking requests (shutting down)")
            self.scheduler.add_requests(requests)
            self._publish()

    def cancel(self, request_ids: Sequence[str], status: RequestStatus = RequestStatus.FINISHED_CANCELLED) -> None:
        with self._cond:
            for request_id in request_ids:
                self.scheduler.cancel(request_id, status)
            self._publish()

    def call_between_steps(self, fn: Callable[[], None], timeout_s: float) -> None:
        """Run `fn` on the loop thread between two steps (never during one) and wait for it; its
        exception is raised here. Without a running thread (not started, stopped) it runs here."""
        done, error = threading.Event(), []
        with self._cond:
            if not self.is_alive:
                fn()
                return
            self._calls.append((fn, done, error))
            self._cond.notify_all()
        if not done.wait(timeout_s):
            raise TimeoutError(f"model {self.name}: the engine loop did not reach a step boundary in {timeout_s}s")
        if error:
            raise error[0]

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = self._calls, []
        for fn, done, error in calls:
            try:
                fn()
            except BaseException as e:  # handed to the caller, which raises it
                error.append(e)
            done.set()

    def _publish(self) -> None:
        """Snapshot the stats and wake everyone waiting on the condition. Call with the lock held."""
        self._snapshot = self.scheduler.stats()
        self._cond.notify_all()

    def wait_until(self, predicate: Callable[[SchedulerStats], bool], timeout_s: float) -> bool:
        """Block until `predicate(stats)` holds (re-checked after every step and submit) or timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            # Judge published snapshots only: mid-step the scheduler has freed slots whose metrics
            # and callbacks have not run yet.
            while not predicate(self._snapshot):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ---- the loop (worker thread) ------------------------------------------------------------
    def _run(self) -> None:
        logger.info("model %s: worker started (%d slots, %s batching)", self.name,
                    self.scheduler.num_slots, self.scheduler.batching)
        while True:
            self._run_calls()  # between two steps: e.g. a reload's weight swap
            with self._cond:
                while True:
                    if self._is_stopping:  # drain already waited; whatever is left gets aborted
                        logger.info("model %s: worker stopped", self.name)
                        return
                    if self._calls:
                        break
                    wait_s = self.scheduler.time_until_step()
                    if wait_s is None:
                        self._cond.wait()  # idle: sleep until a submit, cancel or stop notifies
                    elif wait_s > 0:
                        self._cond.wait(wait_s)  # hold a partial first batch so that it can fill up
                    else:
                        break
                if self._calls:
                    continue  # run them first, then decide again whether to step
            try:
                report = self.engine.step()
            except Exception:
                self.num_failed_steps += 1
                logger.exception("model %s: step failed; aborting its requests and rebuilding the pool", self.name)
                self.engine.recover()
                report = None
            if report is not None and self.on_step is not None:
                try:
                    self.on_step(report)  # before the notify: whoever wakes up sees the metrics too
                except Exception:
                    logger.exception("model %s: step observer failed", self.name)
            with self._cond:
                self._publish()  # wake wait_until/drain observers
