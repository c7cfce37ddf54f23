"""The last seconds of solve traffic, for people (GET /v1/stats, the web page's panel, a quick `curl`).

Prometheus stays the source for dashboards and alerts; it answers "how fast over the last 5 minutes"
with `rate()` and `histogram_quantile()` on the server side. A page has no PromQL, so this keeps a
short window of finished solve requests (time, status, duration) in memory and reports the rate and
exact latency quantiles over it, next to the scheduler state that /metrics exposes as gauges.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from pydantic import BaseModel, Field

__all__ = ["RecentRequests", "WindowStats"]


def _quantile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values), max(1, math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


class WindowStats(BaseModel):
    window_s: float = Field(description="length of the window the numbers below cover")
    requests: int = Field(description="solve responses sent in the window, any status")
    errors: int = Field(description="of those, responses with status >= 400")
    requests_per_s: float = Field(description="requests / the covered part of the window (less after start-up)")
    latency_p50_s: float | None = Field(description="median arrival-to-response time of the 2xx responses")
    latency_p90_s: float | None
    latency_p99_s: float | None


class RecentRequests:
    """A sliding window of finished solve requests. Thread-safe; O(1) to add, O(n log n) to read.

    Only `max_items` are kept (the oldest drop first), so memory stays bounded at any request rate;
    at a higher rate the window is then shorter than `window_s`, and `requests_per_s` says so by
    dividing by the time the kept items actually span.
    """

    def __init__(self, window_s: float = 30.0, max_items: int = 20_000) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, int, float]] = deque(maxlen=max_items)  # (finished, status, duration)
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def add(self, status: int, duration_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._items.append((now, status, duration_s))

    def snapshot(self, now: float | None = None) -> WindowStats:
        now = time.monotonic() if now is None else now
        cutoff = now - self.window_s
        with self._lock:
            while self._items and self._items[0][0] < cutoff:
                self._items.popleft()
            items = list(self._items)
            dropped_some = len(items) == self._items.maxlen
        span = now - max(cutoff, self.started)
        if dropped_some and items:
            span = now - items[0][0]
        ok = sorted(d for _, status, d in items if 200 <= status < 300)
        return WindowStats(
            window_s=self.window_s, requests=len(items), errors=sum(status >= 400 for _, status, _ in items),
            requests_per_s=len(items) / span if span > 0 else 0.0,
            latency_p50_s=_quantile(ok, 0.5), latency_p90_s=_quantile(ok, 0.9), latency_p99_s=_quantile(ok, 0.99))
