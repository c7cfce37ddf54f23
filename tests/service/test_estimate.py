"""The finish-time estimate behind deadline shedding and Retry-After: plain arithmetic on a stats snapshot
and recorded step times."""

from __future__ import annotations

import random

import pytest

from service.engine.estimate import Load, finish_s, retry_after_s, should_shed
from service.engine.scheduler import SchedulerStats
from service.engine.step_times import StepTimes, bucket_of, row_buckets


def stats(**overrides) -> SchedulerStats:
    base = dict(num_waiting=0, num_running=0, num_slots=64, num_steps=0, num_finished=0, occupancy_sum=0.0,
                busy_s=0.0, num_rows_finished=0, row_steps_sum=0)
    return SchedulerStats(**{**base, **overrides})


def test_retry_after_at_load_onset_follows_the_queue_not_the_running_rows():
    """The case the former formula got wrong: 1,024 rows queued, 64 running for 100 full steps of
    10 ms, one finished row of 16 steps. occupancy_sum * slots / finished = 100 * 64 / 1 = 6,400
    steps per row (60 s, clamped); the queue ahead really drains in (1,024 + 64) / 64 x 16 x 10 ms."""
    s = stats(num_waiting=1024, num_running=64, num_steps=100, occupancy_sum=100.0, busy_s=1.0, num_finished=1,
              num_rows_finished=1, row_steps_sum=16)
    times = StepTimes(64)
    times.record(64, 0.01)
    load = Load.of(s, times)
    assert load.step_s(64) == 0.01 and load.row_steps == 16
    assert abs(finish_s(load, 1, 0.0, 16.0) - 1025 / 64 * 16 * 0.01) < 1e-9
    assert retry_after_s(finish_s(load, 1, 0.0, 16.0)) == 3


def test_retry_after_is_clamped_to_one_second_and_one_minute():
    assert retry_after_s(None) == 1 and retry_after_s(0.01) == 1 and retry_after_s(1e9) == 60
    assert retry_after_s(float("inf")) == 1


def cpu_like(n: int) -> float:
    """A CPU step: a fixed cost plus 1 ms per row."""
    return 0.0002 + 0.001 * n


def gpu_like(n: int) -> float:
    """A CUDA-graph step: the graph of n's bucket replays; nearly flat, a little more per doubling."""
    return 0.002 * (1 + 0.05 * row_buckets(64).index(bucket_of(n, 64)))


def seeded(shape, num_slots: int = 64) -> StepTimes:
    """What the start-up warm-up records: one step at half a bucket plus one and at the whole bucket."""
    times = StepTimes(num_slots)
    for b in row_buckets(num_slots):
        for n in {b // 2 + 1, b}:
            times.record(n, shape(n))
    return times


@pytest.mark.parametrize("shape", [cpu_like, gpu_like])
def test_step_time_is_learned_per_bucket_for_both_device_shapes(shape):
    """From the warm-up's two counts per bucket alone, every row count 1..64 is priced within 1%, on
    a CPU-like device (linear in rows) and a GPU-like one (flat up to the bucket)."""
    times = seeded(shape)
    for n in range(1, 65):
        assert times.step_s(n) == pytest.approx(shape(n), rel=0.01), n


@pytest.mark.parametrize("shape", [cpu_like, gpu_like])
def test_step_time_learned_from_recorded_traffic_with_jitter(shape):
    """Recorded steps at random row counts with +-5% jitter (no warm-up): within 6% everywhere a bucket
    was measured. The linear model over-estimated a 64-row GPU step 30-fold; this one does not."""
    rng = random.Random(0)
    times = StepTimes(64)
    for _ in range(3000):
        n = rng.randint(1, 64)
        times.record(n, shape(n) * rng.uniform(0.95, 1.05))
    for n in range(1, 65):
        assert times.step_s(n) == pytest.approx(shape(n), rel=0.06), n
    if shape is gpu_like:
        assert times.step_s(64) < 2 * times.step_s(1)


def test_step_time_follows_a_device_that_slows_down():
    times = seeded(cpu_like)
    for _ in range(30):  # another process takes the CPU: every step now costs 3x
        times.record(32, 3 * cpu_like(32))
    assert times.step_s(32) == pytest.approx(3 * cpu_like(32), rel=0.01)


def test_unmeasured_buckets_are_priced_from_their_neighbours_as_upper_bounds():
    times = StepTimes(64)
    assert times.step_s(8) is None  # nothing measured: no estimate (admission admits)
    times.record(4, 0.004)
    assert times.step_s(2) == 0.004  # fewer rows cost no more than a measured larger step
    assert times.step_s(16) == pytest.approx(0.016)  # more rows: linear growth from the largest below
    assert times.step_s(3) == 0.004 and times.step_s(4) == 0.004  # one count in the bucket: flat below it


def test_a_step_costs_its_rows_so_short_deadlines_keep_the_pool_small():
    """1 ms per row-step (CPU-like), 8 steps per row, 0.5 s deadline: alone 8 ms; with 5 rows ahead a
    6-row pool steps in 6 ms, 48 ms in all; with 63 ahead a full pool steps in 64 ms: 8 steps are 0.51 s."""
    points = {n: 0.001 * n for b in row_buckets(64) for n in (b // 2 + 1, b)}

    def load(ahead: int) -> Load:
        return Load(num_waiting=0, num_running=ahead, num_slots=64, row_steps=8.0, step_times=points)
    assert finish_s(load(0), 1, 8, 8) == pytest.approx(0.008)
    assert finish_s(load(5), 1, 8, 8) == pytest.approx(0.048)
    assert should_shed(load(5), 1, 8, budget_s=0.5, default_row_steps=8) is None
    shed = should_shed(load(63), 1, 8, budget_s=0.5, default_row_steps=8)
    assert shed is not None and shed.estimate_s == pytest.approx(0.512) and shed.retry_after_s == 1


def test_a_flat_gpu_step_admits_the_burst_a_linear_model_would_refuse():
    """64 rows ahead on a GPU-like device (2.3 ms a step at 64 rows): 8 steps finish in ~37 ms, well
    inside 0.1 s; pricing the step linearly (64 x the one-row time) said 1 s and shed it."""
    burst = Load(num_waiting=0, num_running=63, num_slots=64, row_steps=8.0, step_times=seeded(gpu_like).snapshot())
    assert should_shed(burst, 1, 8, budget_s=0.1, default_row_steps=8) is None
    linear = Load(num_waiting=0, num_running=63, num_slots=64, row_steps=8.0, step_times={1: gpu_like(1)})
    assert should_shed(linear, 1, 8, budget_s=0.1, default_row_steps=8) is not None


def test_shed_when_the_queue_ahead_makes_the_deadline_unmeetable():
    busy = Load(num_waiting=640, num_running=64, num_slots=64, row_steps=16.0, step_times={64: 0.01, 1: 0.01 / 64})
    shed = should_shed(busy, 1, 16, budget_s=0.5, default_row_steps=16)
    assert shed is not None and abs(shed.estimate_s - (641 / 64 * 16 * 0.01 + 0.16)) < 1e-9
    assert shed.retry_after_s == 2  # 1.76 s - 0.5 s of the work ahead must drain first
    # Nothing measured yet: admit. Could not finish even alone: admit (a matter of budget, not load).
    assert should_shed(Load(640, 64, 64, None), 1, 16, 0.5, 16) is None
    assert should_shed(busy, 1, 100_000, budget_s=0.5, default_row_steps=16) is None


def test_time_lost_before_admission_is_load_and_an_idle_pool_admits():
    """20 ms steps, 8 steps: 0.16 s alone. With one row running and 0.1 s of a 0.5 s budget left (the
    rest spent waiting for the event loop), the request is shed: it fits its budget alone, so what it
    lacks is load's. Judged against what is left only, it would be admitted as hopeless and time out.
    An idle pool admits whatever the estimate says: nothing to protect, and its steps are measured."""
    busy = Load(num_waiting=0, num_running=1, num_slots=64, row_steps=8.0, step_times={1: 0.02, 2: 0.02})
    assert should_shed(busy, 1, 8, budget_s=0.1, default_row_steps=8, timeout_s=0.5) is not None
    assert should_shed(busy, 1, 8, budget_s=0.1, default_row_steps=8) is None
    idle = Load(num_waiting=0, num_running=0, num_slots=64, row_steps=8.0, step_times={1: 0.5})
    assert should_shed(idle, 1, 8, budget_s=0.1, default_row_steps=8, timeout_s=0.5) is None
