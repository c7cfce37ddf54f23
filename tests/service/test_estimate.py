"""The finish-time estimate behind deadline shedding and Retry-After: plain arithmetic on a stats snapshot."""

from __future__ import annotations

from service.engine.estimate import Load, finish_s, retry_after_s, should_shed
from service.engine.scheduler import SchedulerStats


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
    load = Load.of(s)
    assert abs(load.row_step_s - 0.01 / 64) < 1e-12 and load.row_steps == 16
    assert abs(finish_s(load, 1, 0.0, 16.0) - 1025 / 64 * 16 * 0.01) < 1e-9
    assert retry_after_s(finish_s(load, 1, 0.0, 16.0)) == 3


def test_retry_after_is_clamped_to_one_second_and_one_minute():
    assert retry_after_s(None) == 1 and retry_after_s(0.01) == 1 and retry_after_s(1e9) == 60
    assert retry_after_s(float("inf")) == 1


def test_a_step_costs_its_rows_so_short_deadlines_keep_the_pool_small():
    """1 ms per row-step, 8 steps per row, 0.5 s deadline: alone 8 ms; with 5 rows ahead a 6-row
    pool steps in 6 ms, 48 ms in all; with 60 ahead a full pool steps in 64 ms: 8 steps are 0.51 s."""
    def load(ahead: int) -> Load:
        return Load(num_waiting=0, num_running=ahead, num_slots=64, row_step_s=0.001, row_steps=8.0)
    assert abs(finish_s(load(0), 1, 8, 8) - 0.008) < 1e-12
    assert abs(finish_s(load(5), 1, 8, 8) - 0.048) < 1e-12
    assert should_shed(load(5), 1, 8, budget_s=0.5, default_row_steps=8) is None
    shed = should_shed(load(63), 1, 8, budget_s=0.5, default_row_steps=8)
    assert shed is not None and abs(shed.estimate_s - 0.512) < 1e-9 and shed.retry_after_s == 1


def test_shed_when_the_queue_ahead_makes_the_deadline_unmeetable():
    busy = Load(num_waiting=640, num_running=64, num_slots=64, row_step_s=0.01 / 64, row_steps=16.0)
    shed = should_shed(busy, 1, 16, budget_s=0.5, default_row_steps=16)
    assert shed is not None and abs(shed.estimate_s - (641 / 64 * 16 * 0.01 + 0.16)) < 1e-9
    assert shed.retry_after_s == 2  # 1.76 s - 0.5 s of the work ahead must drain first
    # Nothing measured yet: admit. Could not finish even alone: admit (a matter of budget, not load).
    assert should_shed(Load(640, 64, 64, None, None), 1, 16, 0.5, 16) is None
    assert should_shed(busy, 1, 100_000, budget_s=0.5, default_row_steps=16) is None


def test_the_step_window_follows_the_recent_step_time_not_the_all_time_mean():
    """10,000 fast steps of 1 row, then the pool fills and steps slow down: the window reports the
    new steps (0.5 s over 64 rows), where the all-time mean would say 5 ms for 64 rows."""
    from service.engine.estimate import StepWindow

    window = StepWindow()
    early = stats(num_steps=10_000, busy_s=10_000 * 0.001, occupancy_sum=10_000 / 64, num_running=1)
    assert window.observe(early, now=0.0) is None  # one mark: no window yet
    later = stats(num_steps=10_010, busy_s=10.0 + 10 * 0.5, occupancy_sum=10_000 / 64 + 10, num_running=64)
    step_s, rows = window.observe(later, now=5.0)
    assert abs(step_s - 0.5) < 1e-9 and abs(rows - 64) < 1e-9
    load = Load(0, 64, 64, row_step_s=15.0 / (10_000 + 640), row_steps=None, recent_step_s=step_s, recent_rows=rows)
    assert abs(load.step_s(64) - 0.5) < 1e-9 and abs(load.step_s(32) - 0.5) < 1e-9  # fixed cost: no scale-down
    assert abs(Load.of(later).step_s(64) - 64 * 15.0 / (10_000 + 640)) < 1e-9  # all-time: per row-step
