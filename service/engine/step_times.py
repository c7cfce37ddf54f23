"""Step time against rows stepped, learned per row-bucket from the steps that ran on this device.

How a step's time grows with its rows depends on the device: on a CPU it grows about linearly (the
work is the rows'); a CUDA step replays the graph of the smallest row bucket (1, 2, 4, ..., the
pool) that holds the rows, so it is nearly flat up to that bucket and jumps at the next. One shape
assumed for both mis-prices the other: linear growth over-estimates a GPU burst, flat buckets
under-estimate a CPU step just above half a bucket.

So nothing is assumed: every step that runs is recorded at its exact row count (an exponentially
weighted mean per count, so the table follows a device that slows down or speeds up), and a step
of n rows is priced from the measured counts of n's own bucket, by a least-squares line through
them (slope >= 0): linear where the device is linear, flat where it is flat. The start-up warm-up
measures two counts per bucket (half the bucket plus one, and the whole bucket), so every bucket has
its shape before the first request (service/engine/core.py `Engine.warmup`). A bucket with one
measured count is taken as flat below it and linear above it (an upper bound for both shapes); a
bucket with none borrows from the nearest measured bucket, scaled linearly from below or flat from
above (again an upper bound).

Plain data and arithmetic, no model: the scheduler holds one and its tests feed it recorded times.
"""

from __future__ import annotations

import threading

from service.engine.stepper import row_buckets  # the CUDA stepper's graph buckets: 1, 2, 4, ..., the pool

__all__ = ["StepTimes", "bucket_of", "row_buckets"]

ALPHA = 0.2  # weight of a new measurement of a row count (about the last five steps of that count)


def bucket_of(rows: int, num_slots: int) -> int:
    """The smallest bucket of `row_buckets(num_slots)` that holds `rows` rows (the pool for more)."""
    b = 1
    while b < rows:
        b *= 2
    return min(b, num_slots)


class StepTimes:
    """Measured seconds per step by rows stepped; thread-safe (recorded on the stepping thread,
    read by admission on the event loop)."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError(f"num_slots={num_slots}; at least 1")
        self.num_slots = num_slots
        self._mean: dict[int, float] = {}  # rows -> exponentially weighted mean step time
        self._lock = threading.Lock()

    def record(self, rows: int, seconds: float) -> None:
        if not 1 <= rows <= self.num_slots or seconds < 0:
            return
        with self._lock:
            old = self._mean.get(rows)
            self._mean[rows] = seconds if old is None else old + ALPHA * (seconds - old)

    def snapshot(self) -> dict[int, float]:
        with self._lock:
            return dict(self._mean)

    def __bool__(self) -> bool:
        return bool(self._mean)

    def step_s(self, rows: int) -> float | None:
        """Predicted seconds of one step over `rows` rows; None before anything was measured."""
        return predict(self.snapshot(), rows, self.num_slots)


def predict(points: dict[int, float], rows: int, num_slots: int) -> float | None:
    """Seconds of one step over `rows` rows from measured {rows: seconds} (see the module doc)."""
    if not points:
        return None
    rows = max(1, min(rows, num_slots))
    bucket = bucket_of(rows, num_slots)
    lo = bucket // 2 + 1 if bucket > 1 else 1  # the row counts that step in this bucket
    own = sorted((n, t) for n, t in points.items() if lo <= n <= bucket)
    if len(own) >= 2:
        return _line(own, rows)
    if len(own) == 1:
        n, t = own[0]
        return t if rows <= n else t * rows / n
    below = [n for n in points if n < lo]
    if below:  # the largest measured count below: linear growth from there
        n = max(below)
        return points[n] * rows / n
    n = min(points)  # only counts above: a step of fewer rows costs no more
    return points[n]


def _line(own: list[tuple[int, float]], rows: int) -> float:
    """Least-squares line through a bucket's (rows, seconds) points at `rows`, slope >= 0, never
    below the cheapest measured step of the bucket."""
    k = len(own)
    mean_n = sum(n for n, _ in own) / k
    mean_t = sum(t for _, t in own) / k
    var = sum((n - mean_n) ** 2 for n, _ in own)
    slope = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in own) / var) if var > 0 else 0.0
    return max(min(t for _, t in own), mean_t + slope * (rows - mean_n))
