"""Scheduler bookkeeping, stepped by hand on a real tiny model (no HTTP, no threads)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.scheduler import QueueFullError, Request, RequestStatus, Scheduler
from service.worker import ModelWorker, WorkerClosedError
from tests.service.conftest import make_model, sudoku_puzzles
from trm_core.tasks import sudoku

PUZZLES = [sudoku.encode(sudoku.parse(p)) for p in sudoku_puzzles(8)]


@pytest.fixture(scope="module")
def model():
    return make_model("sudoku")


def make_request(i: int, max_steps: int = 3, *, halting: str = "fixed", finished: list | None = None,
                 **kw) -> Request:
    done = finished if finished is not None else []
    return Request(request_id=f"r{i}", inputs=torch.tensor(PUZZLES[i % len(PUZZLES)]), max_steps=max_steps,
                   halting=halting, on_finish=done.append, **kw)


def run_until_idle(s: Scheduler, limit: int = 1000) -> int:
    n = 0
    while s.time_until_step() is not None:
        s.step()
        n += 1
        assert n < limit
    return n


def test_admission_fills_lowest_slots_and_halted_rows_leave(model):
    s = Scheduler(model, num_slots=2, max_queue=8)
    finished: list[Request] = []
    s.add_requests([make_request(0, 1, finished=finished), make_request(1, 3, finished=finished),
                    make_request(2, 1, finished=finished)])
    assert len(s.waiting) == 3
    out = s.schedule()
    assert [r.request_id for r in out.admitted] == ["r0", "r1"] and [r.slot for r in out.admitted] == [0, 1]
    assert len(s.waiting) == 1 and out.num_rows == 2
    s.update_from_output(out, s.execute(out))  # step 1: r0 reaches its budget of 1
    assert [r.request_id for r in finished] == ["r0"] and s.running[0] is None
    out = s.schedule()  # r2 joins slot 0 between two steps while r1 keeps going
    assert [(r.request_id, r.slot) for r in out.admitted] == [("r2", 0)] and s.running[1].request_id == "r1"
    assert not s.waiting
    s.update_from_output(out, s.execute(out))
    assert [r.request_id for r in finished] == ["r0", "r2"]  # r2 ran one step, its whole budget
    run_until_idle(s)
    assert [r.request_id for r in finished] == ["r0", "r2", "r1"]
    assert [r.steps for r in finished] == [1, 1, 3]
    assert all(r.status == RequestStatus.FINISHED_HALTED and r.halt_reason == "budget" for r in finished)
    assert not s.requests and s.stats().num_running == 0


def _alone(model, request: Request) -> Request:
    s = Scheduler(model, num_slots=1, max_queue=1)
    s.add_request(request)
    run_until_idle(s)
    return request


def test_request_admitted_mid_flight_gets_the_answer_it_gets_alone(model):
    s = Scheduler(model, num_slots=3, max_queue=4)
    a, b = make_request(0, 6, return_steps=True), make_request(1, 4, return_steps=True)
    s.add_request(a)
    s.step()
    s.step()
    s.add_request(b)  # joins while a is at step 2
    run_until_idle(s)
    a_alone, b_alone = _alone(model, make_request(0, 6, return_steps=True)), _alone(model, make_request(1, 4,
                                                                                                     return_steps=True))
    for mixed, alone in ((a, a_alone), (b, b_alone)):
        assert mixed.answer == alone.answer and mixed.steps == alone.steps
        assert mixed.trajectory == alone.trajectory
        assert math.isclose(mixed.q_halt_logit, alone.q_halt_logit, rel_tol=1e-4, abs_tol=1e-5)
    # The model really changes its answer over steps, so a stale or swapped row would show.
    assert a.trajectory[0] != a.trajectory[-1]


def test_learned_halting_stops_at_step_one_and_budget_caps_the_rest():
    eager, lazy = make_model("sudoku", halt_bias=5.0), make_model("sudoku", halt_bias=-5.0)
    for m, steps, reason in ((eager, 1, "learned"), (lazy, 5, "budget")):
        r = _alone(m, make_request(0, 5, halting="learned"))
        assert (r.steps, r.halt_reason) == (steps, reason)
        assert (r.q_halt_logit > 0) == (reason == "learned")


def test_verified_halting_stops_when_the_answer_is_accepted(model):
    reference = _alone(model, make_request(0, 6, return_steps=True))
    target = reference.trajectory[2]  # the answer after step 3
    first = reference.trajectory.index(target) + 1
    r = _alone(model, make_request(0, 6, halting="verified", accept=lambda tokens: tokens == target))
    assert (r.steps, r.halt_reason, r.answer) == (first, "verified", target)
    never = _alone(model, make_request(0, 4, halting="verified", accept=lambda tokens: False))
    assert (never.steps, never.halt_reason) == (4, "budget")


def test_queue_is_bounded_and_all_or_nothing(model):
    s = Scheduler(model, num_slots=1, max_queue=2)
    s.add_request(make_request(0))
    with pytest.raises(QueueFullError) as e:
        s.add_requests([make_request(1), make_request(2)])
    assert e.value.needed == 2 and e.value.depth == 1 and e.value.capacity == 2
    assert [r.request_id for r in s.waiting] == ["r0"] and set(s.requests) == {"r0"}
    s.add_request(make_request(1))
    with pytest.raises(QueueFullError):
        s.add_request(make_request(2))
    s.schedule()  # r0 takes the slot, which frees one queue place
    with pytest.raises(ValueError, match="duplicate"):
        s.add_request(make_request(1))
    s.add_request(make_request(2))
    assert [r.request_id for r in s.waiting] == ["r1", "r2"]


def test_cancel_waiting_now_and_running_before_next_step(model):
    s = Scheduler(model, num_slots=1, max_queue=4)
    finished: list[Request] = []
    a, b, c = (make_request(i, 50, finished=finished) for i in range(3))
    s.add_requests([a, b, c])
    s.step()
    assert s.cancel("r1") and b.status == RequestStatus.FINISHED_CANCELLED and finished == [b]
    assert s.cancel("r0") and a.status == RequestStatus.RUNNING  # applied between steps, never mid-step
    report = s.step()
    assert a.status == RequestStatus.FINISHED_CANCELLED and a.steps == 1
    assert s.running[0] is c and a in report.finished
    assert not s.cancel("r0") and not s.cancel("nope")
    assert finished == [b, a]


def test_deadline_frees_waiting_and_running_rows(model):
    s = Scheduler(model, num_slots=1, max_queue=4)
    t = 1000.0
    a, b = make_request(0, 50, deadline=t + 1.0), make_request(1, 50, deadline=t + 5.0)
    s.add_requests([a, b])
    s.update_from_output(out := s.schedule(now=t), s.execute(out), now=t)
    out = s.schedule(now=t + 2.0)  # a's deadline passed: it leaves, b takes its slot
    assert a.status == RequestStatus.FINISHED_TIMEOUT and a in out.finished and out.admitted == [b]
    out = s.schedule(now=t + 6.0)
    assert b.status == RequestStatus.FINISHED_TIMEOUT and out.num_rows == 0 and not s.requests


def test_request_level_batching_admits_only_into_an_empty_pool(model):
    for batching, c_joins_at in (("continuous", 1), ("request", 5)):
        s = Scheduler(model, num_slots=2, max_queue=4, batching=batching)
        a, b, c = make_request(0, 5), make_request(1, 1), make_request(2, 1)
        s.add_requests([a, b, c])
        step = 0
        while c.status == RequestStatus.WAITING:
            s.step()
            step += 1
        assert step - 1 == c_joins_at, batching  # the step before c's first one
        run_until_idle(s)


def test_partial_first_batch_waits_at_most_max_wait(model):
    s = Scheduler(model, num_slots=4, max_queue=8, max_wait_s=0.5)
    assert s.time_until_step(now=0.0) is None  # idle: nothing to do
    r = make_request(0, arrival_time=100.0)
    s.add_request(r)
    assert s.time_until_step(now=100.2) == pytest.approx(0.3)
    assert s.time_until_step(now=100.6) == 0.0
    s.add_requests([make_request(i, arrival_time=100.0) for i in range(1, 4)])
    assert s.time_until_step(now=100.0) == 0.0  # a full batch steps at once


def test_a_failed_step_aborts_its_requests_and_the_worker_carries_on(model):
    finished: list[Request] = []
    bad = Request(request_id="bad", inputs=torch.full((81,), 99), max_steps=2, halting="fixed",
                  on_finish=finished.append)  # token 99 is outside the vocabulary: the embedding fails
    worker = ModelWorker("sudoku", Scheduler(model, num_slots=2, max_queue=4))
    worker.start()
    worker.submit([bad])
    assert worker.wait_until(lambda s: s.num_running == 0 and s.num_waiting == 0, 10)
    good = make_request(0, 2, finished=finished)
    worker.submit([good])
    assert worker.drain(10)
    assert [r.status for r in finished] == [RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_HALTED]
    assert worker.num_failed_steps == 1
    with pytest.raises(WorkerClosedError):
        worker.submit([make_request(1)])


def test_drain_finishes_in_flight_requests(model):
    finished: list[Request] = []
    worker = ModelWorker("sudoku", Scheduler(model, num_slots=2, max_queue=8))
    worker.start()
    worker.submit([make_request(i, 3 + i, finished=finished) for i in range(5)])
    assert worker.drain(30)
    assert sorted(r.request_id for r in finished) == [f"r{i}" for i in range(5)]
    assert all(r.status == RequestStatus.FINISHED_HALTED and r.steps == 3 + int(r.request_id[1:]) for r in finished)
    assert not worker.is_alive


# ---- randomized workload: nothing lost, nothing answered twice ---------------------------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 6), st.sampled_from(["fixed", "learned"])),
    st.tuples(st.just("cancel"), st.integers(0, 30), st.just("")),
    st.tuples(st.just("step"), st.integers(1, 3), st.just("")),
), max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, num_slots=st.integers(1, 3), batching=st.sampled_from(["continuous", "request"]))
def test_random_workload_answers_every_request_exactly_once(model, ops, num_slots, batching):
    s = Scheduler(model, num_slots=num_slots, max_queue=6, batching=batching)
    calls: dict[str, int] = {}
    added: list[Request] = []

    def on_finish(r: Request) -> None:
        calls[r.request_id] = calls.get(r.request_id, 0) + 1

    for op, n, mode in ops:
        if op == "add":
            r = Request(request_id=f"q{len(added)}", inputs=torch.tensor(PUZZLES[len(added) % 8]), max_steps=n,
                        halting=mode, on_finish=on_finish)
            try:
                s.add_request(r)
                added.append(r)
            except QueueFullError:
                assert len(s.waiting) == 6
        elif op == "cancel" and added:
            s.cancel(added[n % len(added)].request_id)
        elif op == "step":
            for _ in range(n):
                s.step()
                running = [r for r in s.running if r is not None]
                assert len({id(r) for r in running}) == len(running) <= num_slots
                assert all(r.status == RequestStatus.RUNNING and s.running[r.slot] is r for r in running)
    run_until_idle(s)
    assert calls == {r.request_id: 1 for r in added}
    for r in added:
        assert r.status.is_finished and r.slot is None
        if r.status == RequestStatus.FINISHED_HALTED:
            assert r.steps == r.max_steps and r.answer is not None and len(r.answer) == 81  # q_halt < 0: budget
        else:
            assert r.status == RequestStatus.FINISHED_CANCELLED
    assert not s.requests and not s.waiting and all(r is None for r in s.running)
    assert s.stats().num_finished == len(added)
