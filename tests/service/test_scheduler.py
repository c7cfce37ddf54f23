"""Scheduler bookkeeping, stepped by hand over plain data: no model, no device, no threads.

The runner's output is written out explicitly (`output(...)`): each test says what every row
"predicts" and how confident it is, and checks who leaves, who joins and what the result is.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.engine.scheduler import ModelOutput, QueueFullError, Request, RequestStatus, Scheduler, SchedulerOutput

L = 4  # sequence length of these tests' rows


def output(sched: SchedulerOutput, s: Scheduler, q: float | dict[int, float] = -1.0,
           preds: dict[int, list[int]] | None = None) -> ModelOutput:
    """A step's output: q per slot (default -1: no learned halt), tokens per slot (default: the row's view)."""
    qs = [q.get(i, -1.0) if isinstance(q, dict) else q for i in range(sched.num_rows)]
    rows = []
    for slot in range(sched.num_rows):
        row = s.running[slot]
        default = [row.view] * L if row is not None else [0] * L
        rows.append((preds or {}).get(slot, default))
    return ModelOutput(q_halt=qs, preds=torch.tensor(rows, dtype=torch.int32))


def req(i: int | str, max_steps: int = 3, *, halting: str = "fixed", views: int = 1, finished: list | None = None,
        **kw) -> Request:
    inputs = torch.zeros(L, dtype=torch.int32) if views == 1 else torch.arange(views)[:, None].repeat(1, L)
    if views > 1:
        kw.setdefault("map_back", lambda view, tokens: tokens)
    return Request(request_id=f"r{i}", inputs=inputs.int(), max_steps=max_steps, halting=halting,
                   on_finish=(finished.append if finished is not None else None), **kw)


def step(s: Scheduler, now: float | None = None, **out_kw) -> list[Request]:
    sched = s.schedule(now=now)
    done = s.update_from_output(sched, output(sched, s, **out_kw) if sched.num_rows else None, now=now)
    return sched.finished + done


def run_until_idle(s: Scheduler, limit: int = 1000, **out_kw) -> list[Request]:
    finished = []
    for _ in range(limit):
        if s.time_until_step() is None:
            return finished
        finished += step(s, **out_kw)
    raise AssertionError("scheduler did not go idle")


def test_admission_fills_lowest_slots_and_halted_rows_leave():
    s = Scheduler(num_slots=2, max_queue=8)
    s.add_requests([req(0, 1), req(1, 3), req(2, 1)])
    assert len(s.waiting) == 3 and s.stats().num_waiting == 3
    sched = s.schedule()
    assert [(a.slot) for a in sched.admitted] == [0, 1] and sched.num_rows == 2
    assert [s.running[i].request.request_id for i in (0, 1)] == ["r0", "r1"]
    done = s.update_from_output(sched, output(sched, s))
    assert [r.request_id for r in done] == ["r0"] and s.running[0] is None
    sched = s.schedule()  # r2 joins slot 0 between two steps while r1 keeps going
    assert [a.slot for a in sched.admitted] == [0] and s.running[0].request.request_id == "r2"
    done = s.update_from_output(sched, output(sched, s))
    assert [r.request_id for r in done] == ["r2"]
    done = run_until_idle(s)
    assert [(r.request_id, r.steps, r.halt_reason) for r in done] == [("r1", 3, "budget")]
    assert not s.requests and s.stats().num_running == 0 and s.stats().num_rows_finished == 3


def test_halting_modes_follow_the_one_halting_rule():
    s = Scheduler(num_slots=3, max_queue=8)
    target = [7, 7, 7, 7]
    a = req("learned", 5, halting="learned")
    b = req("verified", 5, halting="verified", accept=lambda tokens: tokens == target)
    c = req("fixed", 2, halting="fixed")
    s.add_requests([a, b, c])
    step(s, q=-1.0)  # nobody halts early at step 1
    assert not any(r.status.is_finished for r in (a, b, c))
    step(s, q={0: 0.5, 1: 3.0}, preds={1: target})  # a: learned; b: its answer is accepted; c: budget 2
    assert (a.halt_reason, a.steps, a.q_halt_logit) == ("learned", 2, 0.5)
    assert (b.halt_reason, b.answer) == ("verified", target)
    assert (c.halt_reason, c.steps) == ("budget", 2)


def test_queue_is_bounded_in_rows_and_all_or_nothing():
    s = Scheduler(num_slots=1, max_queue=4)
    s.add_request(req(0))
    with pytest.raises(QueueFullError) as e:
        s.add_requests([req(1, views=2), req(2, views=2)])
    assert (e.value.needed, e.value.depth, e.value.capacity) == (4, 1, 4)
    assert [r.request_id for r in s.waiting] == ["r0"] and set(s.requests) == {"r0"}
    s.add_request(req(1, views=3))
    with pytest.raises(QueueFullError):
        s.add_request(req(2))
    s.schedule()  # r0 takes the slot, which frees one queue place
    with pytest.raises(ValueError, match="duplicate"):
        s.add_request(req(1))
    s.add_request(req(2))
    assert s.stats().num_waiting == 4


def test_cancel_waiting_now_and_running_before_next_step():
    s = Scheduler(num_slots=1, max_queue=4)
    finished: list[Request] = []
    a, b, c = (req(i, 50, finished=finished) for i in range(3))
    s.add_requests([a, b, c])
    step(s)
    assert s.cancel("r1") and b.status == RequestStatus.FINISHED_CANCELLED and finished == [b]
    assert s.cancel("r0") and a.status == RequestStatus.RUNNING  # applied between steps, never mid-step
    left = step(s)
    assert a.status == RequestStatus.FINISHED_CANCELLED and a.steps == 0 and a.row_steps == 1
    assert s.running[0].request is c and a in left
    assert not s.cancel("r0") and not s.cancel("nope")
    assert finished == [b]  # the scheduler fires callbacks only for what leaves outside a step (cancel)


def test_deadline_frees_waiting_and_running_rows():
    s = Scheduler(num_slots=1, max_queue=4)
    t = 1000.0
    a, b = req(0, 50, deadline=t + 1.0), req(1, 50, deadline=t + 5.0)
    s.add_requests([a, b])
    step(s, now=t)
    sched = s.schedule(now=t + 2.0)  # a's deadline passed: it leaves, b takes its slot
    assert a.status == RequestStatus.FINISHED_TIMEOUT and a in sched.finished and s.running[0].request is b
    sched = s.schedule(now=t + 6.0)
    assert b.status == RequestStatus.FINISHED_TIMEOUT and sched.num_rows == 0 and not s.requests
    assert s.stats().num_waiting == 0


def test_request_level_batching_admits_only_into_an_empty_pool():
    for batching, c_joins_at in (("continuous", 1), ("request", 5)):
        s = Scheduler(num_slots=2, max_queue=4, batching=batching)
        a, b, c = req(0, 5), req(1, 1), req(2, 1)
        s.add_requests([a, b, c])
        n = 0
        while c.status == RequestStatus.WAITING:
            step(s)
            n += 1
        assert n - 1 == c_joins_at, batching  # the step before c's first one
        run_until_idle(s)


def test_partial_first_batch_waits_at_most_max_wait():
    s = Scheduler(num_slots=4, max_queue=8, max_wait_s=0.5)
    assert s.time_until_step(now=0.0) is None  # idle: nothing to do
    s.add_request(req(0, arrival_time=100.0))
    assert s.time_until_step(now=100.2) == pytest.approx(0.3)
    assert s.time_until_step(now=100.6) == 0.0
    s.add_requests([req(i, arrival_time=100.0) for i in range(1, 4)])
    assert s.time_until_step(now=100.0) == 0.0  # a full batch steps at once


def test_refuses_rows_of_another_length():
    s = Scheduler(num_slots=1, max_queue=4, seq_len=81)
    with pytest.raises(ValueError, match=r"expected \(81,\)"):
        s.add_request(req(0))


# ---- priority -----------------------------------------------------------------------------------
def _admitted_ids(s: Scheduler, now: float) -> list[str]:
    sched = s.schedule(now=now)
    return [s.running[a.slot].request.request_id for a in sched.admitted]


def test_lower_priority_value_is_served_first_and_fifo_within_a_level():
    s = Scheduler(num_slots=3, max_queue=16)
    s.add_requests([req(i, arrival_time=10.0 + i, priority=p) for i, p in enumerate([5, 0, 5, -5, 0, -5])])
    assert _admitted_ids(s, now=20.0) == ["r3", "r5", "r1"]  # -5 (arrival order), then the first 0
    s.abort_all()
    s.add_requests([req(f"b{i}", arrival_time=10.0 + i, priority=p) for i, p in enumerate([5, 5, 0, 5, 0])])
    assert _admitted_ids(s, now=20.0) == ["rb2", "rb4", "rb0"]


def test_aging_lets_a_low_priority_request_overtake_newer_high_priority_ones():
    """One level per second of waiting: a priority-5 request that has waited 10 s ranks with a
    priority -5 request arriving now, ahead of any that arrive later. No request waits forever."""
    s = Scheduler(num_slots=1, max_queue=16, priority_aging_s=1.0)
    s.add_requests([req("old", 1, arrival_time=0.0, priority=5), req("new", 1, arrival_time=10.5, priority=-5),
                    req("tie", 1, arrival_time=9.9, priority=-5)])
    assert _admitted_ids(s, now=11.0) == ["rtie"]  # key 4.9 < old's 5.0 < new's 5.5
    s.update_from_output(sched := s.schedule(now=11.0), output(sched, s))  # rtie halts (budget 1)
    assert _admitted_ids(s, now=11.1) == ["rold"]


def test_a_stream_of_high_priority_requests_cannot_starve_a_low_priority_one():
    s = Scheduler(num_slots=1, max_queue=64, priority_aging_s=0.5)
    s.add_request(low := req("low", 1, arrival_time=0.0, priority=10))
    served_at = None
    for t in range(40):  # one priority -10 arrival per second, each needing the only slot for a step
        now = float(t)
        s.add_request(req(f"hi{t}", 1, arrival_time=now, priority=-10))
        if "rlow" in _admitted_ids(s, now=now):
            served_at = now
            break
        s.update_from_output(sched := s.schedule(now=now), output(sched, s))
    # its key is 10 x 0.5 = 5.0; the -10 arrivals have keys t - 5.0: it goes after those of t <= 10
    assert served_at is not None and served_at <= 12.0 and not low.status.is_finished


def test_groups_and_single_rows_share_slots_in_priority_order():
    s = Scheduler(num_slots=4, max_queue=300)
    big = req("big", 5, views=8, arrival_time=1.0, priority=0)
    urgent = req("urgent", 5, views=2, arrival_time=2.0, priority=-3, map_back=lambda v, t: t)
    s.add_requests([big, urgent, req("late", 5, arrival_time=3.0, priority=1)])
    assert _admitted_ids(s, now=3.0) == ["rurgent", "rbig", "rlate", "rurgent"]  # one row per request per round


def test_rows_ahead_counts_only_rows_served_before_the_new_request():
    s = Scheduler(num_slots=1, max_queue=64, priority_aging_s=1.0)
    s.add_requests([req(i, arrival_time=100.0, priority=5) for i in range(10)]
                   + [req("g", views=4, arrival_time=100.0, priority=-5)])
    assert s.rows_ahead(0, now=100.0) == 4  # only the priority -5 group's rows
    assert s.rows_ahead(5, now=100.0) == 14
    assert s.rows_ahead(0, now=106.0) == 14  # they have waited 6 s: 5 - 6 < 0


def test_priority_needs_a_positive_aging_time():
    with pytest.raises(ValueError, match="priority_aging_s"):
        Scheduler(num_slots=1, max_queue=1, priority_aging_s=0.0)


# ---- groups of views ---------------------------------------------------------------------------
def test_group_finishes_on_its_first_verified_row_and_frees_the_others():
    s = Scheduler(num_slots=4, max_queue=16)
    g = req("g", 8, halting="verified", views=6, accept=lambda tokens: tokens == [9] * L)
    other = req("other", 8)
    s.add_requests([g, other])
    step(s)  # round-robin: g takes slots 0, 2, 3 and other slot 1 (one row per request per round)
    assert [s.running[i].request.request_id for i in range(4)] == ["rg", "rother", "rg", "rg"]
    assert [s.running[i].view for i in (0, 2, 3)] == [0, 1, 2]
    done = step(s, preds={3: [9] * L})  # view 2 (slot 3) finds the accepted answer at its 2nd step
    assert done == [g] and (g.view, g.steps, g.halt_reason) == (2, 2, "verified")
    assert g.views_run == 3 and g.row_steps == 6  # 3 rows x 2 steps; views 3-5 never ran
    assert all(row is None or row.request is other for row in s.running)
    assert s.stats().num_waiting == 0  # its unadmitted views no longer count against the queue


def test_rows_after_a_verified_row_in_the_same_step_leave_with_their_group():
    s = Scheduler(num_slots=3, max_queue=8)
    g = req("g", 1, halting="verified", views=3, accept=lambda tokens: tokens == [9] * L)
    s.add_request(g)
    done = step(s, preds={0: [9] * L})  # view 0 is verified; views 1 and 2 reach their budget in the same step
    assert done == [g] and (g.view, g.halt_reason) == (0, "verified")
    assert g.row_steps == 3  # the step was computed for all three rows
    assert all(row is None for row in s.running) and not s.requests


def test_group_without_a_verified_row_votes_for_the_confident_majority():
    s = Scheduler(num_slots=8, max_queue=16)
    answers = {0: [1] * L, 1: [2] * L, 2: [2] * L, 3: [3] * L, 4: [3] * L}  # 2 votes each for [2] and [3]
    g = req("g", 1, halting="learned", views=5)
    s.add_request(g)
    step(s, q={0: 4.0, 1: -2.0, 2: -2.0, 3: 1.0, 4: 0.5}, preds=answers)
    assert g.answer == [3] * L and g.view == 3  # [3] ties [2] on votes and wins on mean confidence
    assert g.views_run == 5 and g.row_steps == 5


def test_vote_prefers_answers_that_pass_the_rule_check():
    s = Scheduler(num_slots=4, max_queue=16)
    g = req("g", 1, halting="learned", views=3, accept=lambda tokens: tokens == [9] * L)
    s.add_request(g)
    step(s, q=2.0, preds={0: [1] * L, 1: [1] * L, 2: [9] * L})
    assert g.answer == [9] * L and g.view == 2


def test_views_are_mapped_back_before_checking_and_voting():
    s = Scheduler(num_slots=2, max_queue=8)
    g = req("g", 3, halting="verified", views=2, accept=lambda tokens: tokens == [0, 1, 2, 3],
            map_back=lambda view, tokens: tokens[::-1] if view == 1 else tokens)
    s.add_request(g)
    step(s, preds={0: [0, 1, 2, 4], 1: [3, 2, 1, 0]})  # view 1's answer, reversed back, is accepted
    assert (g.view, g.answer, g.steps) == (1, [0, 1, 2, 3], 1)


def test_per_group_cap_runs_views_in_waves():
    s = Scheduler(num_slots=8, max_queue=64)
    g = req("g", 2, views=10, max_running_rows=3)
    s.add_request(g)
    seen = []
    while not g.status.is_finished:
        step(s)
        seen.append(len(g.slots))
        assert len(g.slots) <= 3
    assert g.views_run == 10 and g.row_steps == 20 and max(seen) == 3


def test_staged_waves_grow_while_unsolved_and_end_at_the_first_verified_view():
    """K = 128 views, first wave 16, budget 3 steps; view v answers [v] * L, and only view 50's answer
    passes. Waves: [0, 16), [16, 32), [32, 64): view 50 is verified in the third, at its first step."""
    s = Scheduler(num_slots=128, max_queue=256)
    g = req("g", 3, halting="verified", views=128, first_wave=16, accept=lambda tokens: tokens == [50] * L)
    s.add_request(g)
    waves = []
    while not g.status.is_finished:
        step(s)
        waves.append(sorted(row.view for row in s.running if row is not None))
    first, second = list(range(16)), list(range(16, 32))
    assert waves == [first, first, [], second, second, [], []]  # running after each step; wave 3 ran 1 step
    assert (g.view, g.answer, g.halt_reason, g.steps) == (50, [50] * L, "verified", 1)
    assert g.views_run == 64 and g.row_steps == 32 * 3 + 32 * 1
    every = req("all", 3, halting="verified", views=128, accept=lambda tokens: tokens == [50] * L)
    s.add_request(every)
    step(s)
    assert (every.view, every.answer, every.steps) == (g.view, g.answer, g.steps)  # the same answer
    assert every.row_steps == 128 and every.views_run == 128


def test_wave_rule_for_any_number_of_views_and_none_for_other_halting_modes():
    def waves(k: int, first: int) -> list[int]:
        s = Scheduler(num_slots=256, max_queue=512)
        g = req("g", 1, halting="verified", views=k, first_wave=first, accept=lambda tokens: False)
        s.add_request(g)
        sizes = []
        while not g.status.is_finished:
            sizes.append(len(s.schedule().admitted))
            s.update_from_output(sched := SchedulerOutput([], [], 256), output(sched, s))
        return sizes
    assert waves(128, 16) == [16, 16, 32, 64]
    assert waves(100, 16) == [16, 16, 32, 36]
    assert waves(10, 16) == [10] and waves(5, 1) == [1, 1, 2, 1]
    learned = req("l", 1, halting="learned", views=40, first_wave=4)
    assert learned.wave_end == 40  # views that vote run all at once: waves would only add latency
    with pytest.raises(ValueError, match="first_wave"):
        req("bad", views=4, first_wave=0)


def test_waves_respect_the_running_rows_cap():
    s = Scheduler(num_slots=64, max_queue=256)
    g = req("g", 2, halting="verified", views=64, first_wave=16, max_running_rows=8, accept=lambda tokens: False)
    s.add_request(g)
    running = []
    while not g.status.is_finished:
        step(s)
        running.append(len(g.slots))
    assert max(running) == 8 and g.views_run == 64 and g.row_steps == 128


def _steps_until_done(s: Scheduler, requests: list[Request]) -> int:
    ids, done = {r.request_id for r in requests}, set()
    for n in range(1, 100):
        done |= {r.request_id for r in step(s)} & ids
        if done == ids:
            return n
    raise AssertionError("requests did not finish")


def test_a_large_group_does_not_starve_single_rows():
    idle = Scheduler(num_slots=4, max_queue=300)
    idle.add_requests(singles := [req(i, 2) for i in range(6)])
    idle_steps = _steps_until_done(idle, singles)
    s = Scheduler(num_slots=4, max_queue=300)
    big = req("big", 4, views=256, max_running_rows=2)
    s.add_request(big)
    step(s)
    assert len(big.slots) == 2  # its cap: the other half of the pool stays free for others
    s.add_requests(singles := [req(i, 2) for i in range(6)])
    busy_steps = _steps_until_done(s, singles)
    assert busy_steps <= 2 * idle_steps, (busy_steps, idle_steps)
    assert not big.status.is_finished and len(big.slots) == 2


def test_round_robin_shares_free_slots_between_a_group_and_single_rows():
    s = Scheduler(num_slots=4, max_queue=300)
    big = req("big", 5, views=256)
    s.add_request(big)
    s.add_requests([req(i, 5) for i in range(2)])
    step(s)  # one row per request per round, oldest first: big, r0, r1, then big again
    assert [s.running[i].request.request_id for i in range(4)] == ["rbig", "r0", "r1", "rbig"]


@settings(max_examples=40, deadline=None)
@example(ops=[("add", 1, "fixed", 2), ("add", 2, "verified", 4)], num_slots=3, batching="continuous", cap=None)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 5), st.sampled_from(["fixed", "learned", "verified"]), st.integers(1, 4)),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.just(""), st.just(0)),
    st.tuples(st.just("step"), st.integers(1, 3), st.just(""), st.just(0)),
), max_size=30), num_slots=st.integers(1, 4), batching=st.sampled_from(["continuous", "request"]),
    cap=st.sampled_from([None, 1, 2]))
def test_random_workload_answers_every_request_exactly_once(ops, num_slots, batching, cap):
    s = Scheduler(num_slots=num_slots, max_queue=8, batching=batching)
    calls: dict[str, int] = {}
    added: list[Request] = []
    finished: list[Request] = []

    def on_finish(r: Request) -> None:
        calls[r.request_id] = calls.get(r.request_id, 0) + 1

    for op, n, mode, views in ops:
        if op == "add":
            r = req(f"q{len(added)}", n, halting=mode, views=views, max_running_rows=cap,
                    accept=(lambda tokens: tokens == [3] * L) if mode == "verified" else None)
            r.on_finish = on_finish
            try:
                s.add_request(r)
                added.append(r)
            except QueueFullError:
                assert s.stats().num_waiting + views > 8
        elif op == "cancel" and added:
            s.cancel(added[n % len(added)].request_id)
        elif op == "step":
            for _ in range(n):
                finished += step(s, q=-1.0)
                rows = [row for row in s.running if row is not None]
                assert all(row.request.status == RequestStatus.RUNNING for row in rows)
                assert sum(len(r.slots) for r in s.requests.values()) == len(rows) <= num_slots
                assert s.stats().num_waiting == sum(r.num_unadmitted for r in s.requests.values())
    finished += run_until_idle(s, q=-1.0)
    for r in finished:  # what left inside a step: the engine fires these callbacks
        on_finish(r)
    assert calls == {r.request_id: 1 for r in added}
    for r in added:
        assert r.status.is_finished and not r.slots
        if r.status == RequestStatus.FINISHED_HALTED:
            assert r.answer is not None and len(r.answer) == L
            if r.halt_reason == "verified":
                assert r.answer == [3] * L and r.view == 3
            else:
                assert r.steps == r.max_steps and r.views_run == r.num_views and r.row_steps == r.num_views * r.steps
        else:
            assert r.status == RequestStatus.FINISHED_CANCELLED
    assert not s.requests and not s.waiting and not s.active and all(row is None for row in s.running)
    assert s.stats().num_finished == len(added) and s.stats().num_waiting == 0
    # every row-step is counted once: in its request's row_steps and, when the row leaves, in the stats
    assert s.stats().row_steps_sum == sum(r.row_steps for r in added)
    assert all(0 <= r.row_steps <= r.num_views * r.max_steps for r in added)
