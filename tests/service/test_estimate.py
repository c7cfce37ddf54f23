"""The finish-time estimate behind deadline shedding and Retry-After: plain arithmetic on a stats snapshot."""

from __future__ import annotations

from service.estimate import Load, finish_s, own_steps, retry_after_s, should_shed
from service.scheduler import SchedulerStats


def stats(**overrides) -> SchedulerStats:
    base = dict(num_waiting=0, num_running=0, num_slots=64, num_steps=0, num_finished=0, occupancy_sum=0.0,
                busy_s=0.0, num_rows_finished=0, row_steps_sum=0)
    return SchedulerStats(**{**base, **overrides})


def test_retry_after_at_load_onset_follows_the_queue_not_the_running_rows():
    """The case the former formula got wrong: 1,024 rows queued, 64 running for 100 steps each, one
    finished row of 16 steps. occupancy_sum * slots / finished = 100 * 64 / 1 = 6,400 steps per row
    (60 s, clamped); the queue ahead really drains in (1,024 + 64 - 64) / 64 x 16 steps x 10 ms = 2.6 s."""
    s = stats(num_waiting=1024, num_running=64, num_steps=100, occupancy_sum=100.0, busy_s=1.0, num_finished=1,
              num_rows_finished=1, row_steps_sum=16)
    load = Load.of(s)
    assert load.step_s == 0.01 and load.row_steps == 16
    assert abs(finish_s(load, 1, 0.0, 16.0) - 1025 / 64 * 16 * 0.01) < 1e-9
    assert retry_after_s(finish_s(load, 1, 0.0, 16.0)) == 3


def test_retry_after_is_clamped_to_one_second_and_one_minute():
    assert retry_after_s(None) == 1 and retry_after_s(0.01) == 1 and retry_after_s(1e9) == 60
    assert retry_after_s(float("inf")) == 1


def test_own_steps_is_the_budget_for_fixed_halting_and_the_measured_mean_otherwise():
    load = Load(0, 0, 4, 0.01, 12.0)
    assert own_steps(load, 64, "fixed") == 64 and own_steps(load, 64, "learned") == 12
    assert own_steps(load, 8, "verified") == 8 and own_steps(Load(0, 0, 4, 0.01, None), 64, "learned") == 64


def test_shed_when_the_queue_ahead_makes_the_deadline_unmeetable():
    idle = Load(num_waiting=0, num_running=0, num_slots=64, step_s=0.01, row_steps=16.0)
    assert should_shed(idle, 1, 16, budget_s=0.5, default_row_steps=16) is None  # 0.16 s alone
    busy = Load(num_waiting=640, num_running=64, num_slots=64, step_s=0.01, row_steps=16.0)
    shed = should_shed(busy, 1, 16, budget_s=0.5, default_row_steps=16)
    assert shed is not None and abs(shed.estimate_s - (641 / 64 * 16 * 0.01 + 0.16)) < 1e-9
    assert shed.retry_after_s == 2  # 1.76 s - 0.5 s of the work ahead must drain first
    # Nothing measured yet: admit. Could not finish even alone: admit (a matter of budget, not load).
    assert should_shed(Load(640, 64, 64, None, None), 1, 16, 0.5, 16) is None
    assert should_shed(busy, 1, 10_000, budget_s=0.5, default_row_steps=16) is None
