"""Engine = Scheduler + ModelRunner on a real tiny model: answers, halting, views, failures, drain."""

from __future__ import annotations

import math

import pytest
import torch

from service.engine.core import Engine
from service.engine.loop import EngineLoop, WorkerClosedError
from service.engine.scheduler import Request, RequestStatus
from tests.service.conftest import make_model, sudoku_puzzles
from trm_core.tasks import sudoku
from trm_core.tasks.views import sudoku_views

PUZZLES = [sudoku.encode(sudoku.parse(p)) for p in sudoku_puzzles(8)]


@pytest.fixture(scope="module")
def model():
    return make_model("sudoku")


def make_request(i: int, max_steps: int = 3, *, halting: str = "fixed", finished: list | None = None,
                 **kw) -> Request:
    done = finished if finished is not None else []
    return Request(request_id=f"r{i}", inputs=torch.tensor(PUZZLES[i % len(PUZZLES)]), max_steps=max_steps,
                   halting=halting, on_finish=done.append, **kw)


def alone(model, request: Request) -> Request:
    e = Engine.for_model(model, 1 if request.num_views == 1 else 4, max_queue=request.num_views)
    e.scheduler.add_request(request)
    e.run_until_idle()
    return request


def test_request_admitted_mid_flight_gets_the_answer_it_gets_alone(model):
    e = Engine.for_model(model, 3, max_queue=4)
    a, b = make_request(0, 6, return_steps=True), make_request(1, 4, return_steps=True)
    e.scheduler.add_request(a)
    e.step()
    e.step()
    e.scheduler.add_request(b)  # joins while a is at step 2
    e.run_until_idle()
    for mixed, ref in ((a, alone(model, make_request(0, 6, return_steps=True))),
                       (b, alone(model, make_request(1, 4, return_steps=True)))):
        assert mixed.answer == ref.answer and mixed.steps == ref.steps
        assert mixed.trajectory == ref.trajectory
        assert math.isclose(mixed.q_halt_logit, ref.q_halt_logit, rel_tol=1e-4, abs_tol=1e-5)
        assert len(mixed.trajectory_q_halt) == mixed.steps
    assert a.trajectory[0] != a.trajectory[-1]  # the answer really changes, so a swapped row would show


def test_learned_halting_stops_at_step_one_and_budget_caps_the_rest():
    eager, lazy = make_model("sudoku", halt_bias=5.0), make_model("sudoku", halt_bias=-5.0)
    for m, steps, reason in ((eager, 1, "learned"), (lazy, 5, "budget")):
        r = alone(m, make_request(0, 5, halting="learned"))
        assert (r.steps, r.halt_reason) == (steps, reason)
        assert (r.q_halt_logit > 0) == (reason == "learned")


def test_verified_halting_stops_when_the_answer_is_accepted(model):
    reference = alone(model, make_request(0, 6, return_steps=True))
    target = reference.trajectory[2]  # the answer after step 3
    first = reference.trajectory.index(target) + 1
    r = alone(model, make_request(0, 6, halting="verified", accept=lambda tokens: tokens == target))
    assert (r.steps, r.halt_reason, r.answer) == (first, "verified", target)
    never = alone(model, make_request(0, 4, halting="verified", accept=lambda tokens: False))
    assert (never.steps, never.halt_reason) == (4, "budget")


def test_one_view_group_is_bit_identical_to_a_plain_row(model):
    plain = alone(model, make_request(0, 5, return_steps=True))
    views = sudoku_views(1)
    grouped = alone(model, Request(request_id="g", inputs=views.apply(torch.tensor(PUZZLES[0])), max_steps=5,
                                   halting="fixed", return_steps=True, map_back=views.invert_one))
    assert (grouped.answer, grouped.steps, grouped.trajectory) == (plain.answer, plain.steps, plain.trajectory)
    assert grouped.q_halt_logit == plain.q_halt_logit and grouped.row_steps == 5


def test_view_answers_are_the_models_answers_on_the_view_mapped_back(model):
    views = sudoku_views(3, seed=1)
    inputs = views.apply(torch.tensor(PUZZLES[2]))
    g = alone(model, Request(request_id="g", inputs=inputs, max_steps=3, halting="fixed",
                             map_back=views.invert_one, accept=lambda tokens: False))
    assert g.views_run == 3 and g.row_steps == 9
    per_view = [alone(model, Request(request_id=f"v{k}", inputs=inputs[k], max_steps=3, halting="fixed"))
                for k in range(3)]
    mapped = [views.invert_one(k, r.answer) for k, r in enumerate(per_view)]
    assert g.answer in mapped and g.answer == mapped[g.view]


def test_verified_group_stops_at_the_first_view_whose_mapped_back_answer_passes(model):
    views = sudoku_views(4, seed=2)
    inputs = views.apply(torch.tensor(PUZZLES[3]))
    target_view = 2
    ref = alone(model, Request(request_id="ref", inputs=inputs[target_view], max_steps=2, halting="fixed"))
    target = views.invert_one(target_view, ref.answer)  # what view 2 answers after 2 steps, mapped back
    finished: list[Request] = []
    g = Request(request_id="g", inputs=inputs, max_steps=6, halting="verified", map_back=views.invert_one,
                accept=lambda tokens: tokens == target, on_finish=finished.append)
    e = Engine.for_model(model, 4, max_queue=4)
    e.scheduler.add_request(g)
    e.run_until_idle()
    assert finished == [g] and (g.view, g.steps, g.halt_reason, g.answer) == (target_view, 2, "verified", target)
    assert g.row_steps <= 4 * 2 and e.scheduler.stats().num_running == 0


def test_a_failed_step_aborts_its_requests_and_the_worker_carries_on(model):
    finished: list[Request] = []
    bad = Request(request_id="bad", inputs=torch.full((81,), 99), max_steps=2, halting="fixed",
                  on_finish=finished.append)  # token 99 is outside the vocabulary: the embedding fails
    worker = EngineLoop("sudoku", Engine.for_model(model, 2, max_queue=4))
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
    worker = EngineLoop("sudoku", Engine.for_model(model, 2, max_queue=8))
    worker.start()
    worker.submit([make_request(i, 3 + i, finished=finished) for i in range(5)])
    assert worker.drain(30)
    assert sorted(r.request_id for r in finished) == [f"r{i}" for i in range(5)]
    assert all(r.status == RequestStatus.FINISHED_HALTED and r.steps == 3 + int(r.request_id[1:]) for r in finished)
    assert not worker.is_alive


def test_runner_steps_only_the_occupied_prefix_and_leaves_idle_rows_untouched(model):
    e = Engine.for_model(model, 4, max_queue=4)
    e.scheduler.add_request(make_request(0, 50))
    before = e.runner.carry.z_H[1:].clone()
    e.step()
    assert torch.equal(e.runner.carry.z_H[1:], before) and int(e.runner.carry.steps[0]) == 1


def test_warmup_seeds_the_step_times_of_every_bucket_and_leaves_the_pool_idle(model):
    e = Engine.for_model(model, 8, max_queue=8)
    e.warmup(1)
    assert sorted(e.scheduler.step_times.snapshot()) == [1, 2, 3, 4, 5, 8]  # half a bucket + 1, and the bucket
    assert all(e.scheduler.step_times.step_s(n) > 0 for n in range(1, 9))
    assert e.scheduler.stats().num_steps == 0 and int(e.runner.carry.steps.sum()) == 0  # no request saw a warm-up step
    ref = alone(model, make_request(0, 3))
    e.scheduler.add_request(r := make_request(0, 3))
    e.run_until_idle()
    assert r.answer == ref.answer


@pytest.mark.parametrize("winner", [1, 11])
def test_staged_views_verify_the_answer_all_views_at_once_verify(model, winner):
    """16 views in waves of 2, 2, 4, 8 (views [0, 2), [2, 4), [4, 8), [8, 16)); the accepted answer is
    what view `winner` gives after 3 steps, mapped back. All at once and staged, on a real model: the
    same answer at the same step (views do not interact). Staged pays for the waves it ran: 2 rows x 3
    steps when view 1 wins (all at once: 16 x 3); when view 11 in the last wave wins, the three earlier
    waves' 8 rows ran their 6 steps unverified first (8 x 6 + 8 x 3), more than all at once: staging
    trades that risk for the early exits."""
    views = sudoku_views(16, seed=3)
    inputs = views.apply(torch.tensor(PUZZLES[4]))
    ref = alone(model, Request(request_id="ref", inputs=inputs[winner], max_steps=3, halting="fixed"))
    target = views.invert_one(winner, ref.answer)
    others = [alone(model, Request(request_id=f"o{v}", inputs=inputs[v], max_steps=6, halting="fixed",
                                   return_steps=True)) for v in range(16) if v != winner]
    assert all(views.invert_one(int(r.request_id[1:]), tokens) != target for r in others for tokens in r.trajectory)

    def run(first_wave: int | None) -> Request:
        g = Request(request_id="g", inputs=inputs, max_steps=6, halting="verified", map_back=views.invert_one,
                    accept=lambda tokens: tokens == target, first_wave=first_wave)
        e = Engine.for_model(model, 16, max_queue=16)
        e.scheduler.add_request(g)
        e.run_until_idle()
        return g

    every, staged = run(None), run(2)
    for g in (every, staged):
        assert (g.halt_reason, g.view, g.steps, g.answer) == ("verified", winner, 3, target)
    assert every.views_run == 16 and every.row_steps == 16 * 3
    assert (staged.views_run, staged.row_steps) == ((2, 2 * 3) if winner == 1 else (16, 8 * 6 + 8 * 3))
