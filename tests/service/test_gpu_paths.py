"""The CUDA paths' logic, run on a CPU with tiny real models: the CUDA graph self-check and its
fallback (metric and /v1/models field), bf16 serving weights as their own copy, the one-copy step
output, the batched verified-halting check, and the loud CPU fallback of `TRM_DEVICE=auto`."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from service.engine.core import Engine
from service.engine.device import is_cpu_fallback, on_device, side_stream, warn_cpu_fallback
from service.engine.rulecheck import TaskRule, maze_rows, row_check_for, sudoku_rows
from service.engine.scheduler import Request
from service.engine.stepper import (
    SELF_CHECK_TOLERANCE,
    BucketedStep,
    carry_rows,
    follow_puzzle_table,
    prepare_model,
    step_mismatch,
)
from tests.conftest import tiny_model
from tests.service.conftest import MAZE, make_settings, serve, sudoku_puzzles
from trm_core.tasks import maze, sudoku

pytestmark = pytest.mark.anyio


def _carry(model, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    inputs = torch.randint(1, cfg.vocab_size, (n, cfg.seq_len), generator=g, dtype=torch.int32)
    with torch.inference_mode():
        carry = model.reset_rows(model.empty_carry(n), torch.ones(n, dtype=torch.bool), inputs,
                                 torch.zeros(n, dtype=torch.int32))
        carry, _ = model.step(carry)
    return carry


def honest_capture(model):
    """A stand-in for a CUDA graph that replays correctly: the step of whatever the static buffers hold."""
    return lambda bucket, static: (lambda: model.step(static))


def stale_capture(model, bad: set[int]):
    """The failure the self-check exists for: buckets in `bad` replay the outputs computed at capture
    time (an empty capture on the wrong device returns stale buffers), whatever the inputs are now."""
    def capture(bucket, static):
        if bucket not in bad:
            return lambda: model.step(static)
        frozen = model.step(static)
        return lambda: frozen
    return capture


# ---- the CUDA graph self-check ---------------------------------------------------------------------
def test_step_mismatch_is_relative_and_catches_nan():
    model = tiny_model(seed=1)
    with torch.inference_mode():
        step = model.step(_carry(model, 3))
        assert step_mismatch(step, step) == 0.0
        carry, out = step
        bf16 = (carry, type(out)(logits=out.logits.bfloat16().float(), q_halt_logits=out.q_halt_logits,
                                 q_continue_logits=out.q_continue_logits))
        assert 0 < step_mismatch(bf16, step) <= SELF_CHECK_TOLERANCE  # bf16 round-off passes
        nan = (carry, type(out)(logits=out.logits.clone().fill_(math.nan), q_halt_logits=out.q_halt_logits,
                                q_continue_logits=out.q_continue_logits))
        assert step_mismatch(nan, step) == math.inf


def test_self_check_keeps_honest_buckets_and_drops_stale_ones(caplog):
    model = tiny_model(seed=2)
    good = BucketedStep(model, max_rows=8, capture=honest_capture(model))
    assert good.capture_all() == {"captured": [1, 2, 4, 8], "fallback": []}

    bad = BucketedStep(model, max_rows=8, capture=stale_capture(model, {4}))
    with caplog.at_level(logging.WARNING, logger="service.engine.stepper"):
        report = bad.capture_all()
    assert report == {"captured": [1, 2, 8], "fallback": [4]}
    assert bad.fallback[4] > SELF_CHECK_TOLERANCE and "4-row bucket" in caplog.text
    # The fallen-back bucket now steps eagerly: 3 rows (bucket 4) give the rows' own result.
    carry = _carry(model, 3, seed=5)
    with torch.inference_mode():
        assert step_mismatch(bad(carry), model.step(carry)) == 0.0


def test_captured_buckets_replay_through_the_static_buffers():
    """The captured path (replay, then read the first n rows back) equals eager for every prefix."""
    model = tiny_model(seed=3).double()
    step = BucketedStep(model, max_rows=6, capture=honest_capture(model))
    step.capture_all()
    pool = _carry(model, 6, seed=4)
    with torch.inference_mode():
        for n in range(1, 7):
            view = carry_rows(pool, 0, n)
            assert step_mismatch(step(view), model.step(view)) < 1e-12


async def test_fallback_shows_in_models_and_metrics(checkpoints):
    """A served model whose 2-row bucket replays stale outputs: /v1/models and /metrics say so."""
    from service.api.app import create_app
    from service.registry import ModelRegistry

    settings = make_settings(checkpoints, names=("sudoku", "maze"))
    registry = ModelRegistry(settings)
    registry.load()
    runner = registry.models["sudoku"].engine.runner
    assert runner.graph_report() is None  # CPU: no graphs, the field is null
    runner.stepper = BucketedStep(runner.model, runner.num_slots, capture=stale_capture(runner.model, {2}))
    runner.warmup(1)
    app = create_app(settings, registry=registry)
    import httpx

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://trm") as client:
            models = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
            text = (await client.get("/metrics")).text
            # and it still answers: 2 puzzles go through the eager 2-row bucket
            r = await client.post("/v1/sudoku/solve", json={"puzzles": sudoku_puzzles(2), "max_steps": 2})
    assert models["sudoku"]["cuda_graphs"] == {"captured": [1, 4], "fallback": [2]}
    assert models["maze"]["cuda_graphs"] is None
    assert 'trm_cuda_graph_fallback_buckets{model="sudoku"} 1.0' in text
    assert 'trm_cuda_graph_buckets{model="sudoku"} 2.0' in text
    assert "trm_device_fallback_cpu 0.0" in text
    assert r.status_code == 200 and len(r.json()["results"]) == 2


# ---- bf16 serving weights are a copy -----------------------------------------------------------------
def test_bf16_serving_copy_leaves_the_master_in_float32():
    from training.adapt import install_rows

    master = tiny_model(seed=4)
    before = {k: v.clone() for k, v in master.state_dict().items()}
    served = prepare_model(master, torch.bfloat16)  # what a CUDA host serves, prepared on a CPU
    assert served is not master
    assert all(p.dtype == torch.float32 for p in master.parameters())
    assert all(torch.equal(v, before[k]) for k, v in master.state_dict().items())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in served.parameters())
    # Buffers are shared: an adapted puzzle row installed into the master is served at once.
    assert served.puzzle_emb is master.puzzle_emb and served.H_init is master.H_init
    new_rows = torch.randn(2, master.config.puzzle_emb_ndim)
    ids = install_rows(master, new_rows)
    follow_puzzle_table(served, master)
    assert served.puzzle_emb is master.puzzle_emb and served.puzzle_emb.num_rows == ids[-1] + 1
    got = served.puzzle_emb(torch.tensor(ids))
    assert torch.equal(got, new_rows) and served.config.num_puzzle_identifiers == ids[-1] + 1
    # The copy computes the master's step up to bf16 rounding of the weights.
    carry = _carry(master, 4)
    with torch.inference_mode():
        assert 0 < step_mismatch(served.step(carry), master.step(carry)) < 0.1
    # Off CUDA, with no dtype asked for, the runner steps the model itself (nothing to convert).
    assert prepare_model(master) is master


def test_runner_steps_a_copy_and_keeps_the_registry_model(monkeypatch):
    import service.engine.runner as runner_module

    monkeypatch.setattr(runner_module, "prepare_model", lambda m: prepare_model(m, torch.bfloat16))
    master = tiny_model(seed=5)
    engine = Engine.for_model(master, 4, 16)
    assert engine.runner.model is not master and next(master.parameters()).dtype == torch.float32
    engine.warmup(1)
    r = Request(request_id="a", inputs=torch.randint(1, 11, (81,), dtype=torch.int32), max_steps=2,
                halting="fixed")
    engine.scheduler.add_request(r)
    engine.run_until_idle()
    assert r.steps == 2 and len(r.answer) == 81


# ---- one copy per step -------------------------------------------------------------------------------
def test_one_packed_copy_gives_the_step_exactly():
    model = tiny_model(seed=6)
    engine = Engine.for_model(model, 4, 16)
    inputs = torch.randint(1, 11, (3, 81), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    for i in range(3):
        engine.scheduler.add_request(Request(request_id=str(i), inputs=inputs[i], max_steps=3, halting="fixed"))
    sched = engine.scheduler.schedule()
    out = engine.runner.execute(sched)
    with torch.inference_mode():
        carry = model.reset_rows(model.empty_carry(3), torch.ones(3, dtype=torch.bool), inputs,
                                 torch.zeros(3, dtype=torch.int32))
        _, ref = model.step(carry)
    assert out.q_halt == ref.q_halt_logits.tolist()  # float32 bits through the int32 pack, exactly
    assert torch.equal(out.preds, ref.logits.argmax(-1).to(torch.int32))
    assert out.passed == sudoku_rows(inputs, out.preds).tolist()


# ---- the batched verified-halting check ----------------------------------------------------------------
def _sudoku_cases() -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """Real puzzles with their solutions, and broken versions of them, plus the Python verdicts."""
    from tests.conftest import DATA
    from trm_core.tasks.puzzle_csv import read_puzzle_csv

    path = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    rows = read_puzzle_csv(path, limit=12)
    g = torch.Generator().manual_seed(0)
    inputs, answers = [], []
    for k, row in enumerate(rows):
        q = sudoku.encode(sudoku.parse(row.question))
        a = sudoku.encode(sudoku.parse(row.answer))
        for variant in range(4):
            b = list(a)
            if variant == 1:  # swap two cells of a row: units still hold 1-9 in rows, not in columns
                b[0], b[1] = b[1], b[0]
            elif variant == 2:  # one blank
                b[int(torch.randint(81, (1,), generator=g))] = 1
            elif variant == 3:  # a given changed to another digit
                i = next(i for i, t in enumerate(q) if t >= 2)
                b[i] = 2 + (b[i] - 1) % 9
            inputs.append(q)
            answers.append(b if k % 5 else [0] * 81)  # a PAD answer now and then
    verdicts = [not sudoku.verify(sudoku.decode(q), sudoku.decode(b)) for q, b in zip(inputs, answers, strict=True)]
    return torch.tensor(inputs, dtype=torch.int32), torch.tensor(answers, dtype=torch.int32), verdicts


def test_sudoku_batch_check_is_the_rule_check():
    inputs, answers, verdicts = _sudoku_cases()
    assert sum(verdicts) >= 8 and not all(verdicts)
    assert sudoku_rows(inputs, answers).tolist() == verdicts


def _maze_mutations() -> list[list[int]]:
    solved = maze.mark_path(MAZE, maze.shortest_path(MAZE))
    tokens = maze.encode(solved)
    out = [tokens]
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        t = list(tokens)
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            t[int(torch.randint(100, (1,), generator=g))] = int(torch.randint(0, 6, (1,), generator=g))
        out.append(t)
    return out


def test_maze_batch_check_never_rejects_a_valid_route():
    puzzle = maze.encode(MAZE)
    answers = _maze_mutations()
    inputs = torch.tensor([puzzle] * len(answers), dtype=torch.int32)
    passed = maze_rows(10, 10)(inputs, torch.tensor(answers, dtype=torch.int32)).tolist()
    valid = [not maze.verify(MAZE, maze.decode(a, height=10, width=10)) for a in answers]
    assert passed[0] and valid[0]
    assert all(p for p, v in zip(passed, valid, strict=True) if v)  # necessary: never rules out a valid route
    assert sum(passed) < len(passed) // 2  # and it rules out most broken ones


def test_row_checks_stay_on_the_tensors_device():
    """On the meta device any CPU constant mixed into the check raises: the check runs where the rows are."""
    for check, L in ((sudoku_rows, 81), (maze_rows(10, 10), 100)):
        x = torch.zeros(5, L, dtype=torch.int32, device="meta")
        out = check(x, x)
        assert out.device.type == "meta" and out.shape == (5,)
    arc = tiny_model(task="arc", seq_len=100, vocab_size=12, grid_height=10, grid_width=10).config
    assert row_check_for(arc) is None


def test_verified_halting_answers_do_not_change_with_the_batched_check():
    """The bundled model on real puzzles (a fifth of their blanks revealed, so that many rows verify within the
    budget): the same rows halt at the same steps with the same answers whether `accept` is a TaskRule
    (Python only where the batched check passes) or a plain callable (every row in Python), and the
    TaskRule runs Python for fewer rows."""
    import random

    from tests.service.test_views_api import BUNDLED
    from trm_core import load_checkpoint

    questions = sudoku_puzzles(16)
    from tests.service.conftest import SUDOKU_CSV

    solutions = [line.split(",")[2] for line in SUDOKU_CSV.read_text().splitlines()[1:17]]
    rng = random.Random(0)
    grids = []
    for q, a in zip(questions, solutions, strict=True):
        blanks = [i for i, c in enumerate(q) if c in ".0"]
        chars = list(q)
        for i in rng.sample(blanks, len(blanks) // 5):
            chars[i] = a[i]
        grids.append(sudoku.parse("".join(chars)))
    model, _ = load_checkpoint(BUNDLED)
    calls = {"rule": 0, "plain": 0}
    results = {}
    for kind in ("rule", "plain"):
        engine = Engine.for_model(model, 8, 256)
        reqs = []
        for i, grid in enumerate(grids):
            def check(tokens, grid=grid, kind=kind):
                calls[kind] += 1
                return not sudoku.verify(grid, sudoku.decode(tokens))

            reqs.append(Request(request_id=str(i), inputs=torch.tensor(sudoku.encode(grid), dtype=torch.int32),
                                max_steps=8, halting="verified", accept=TaskRule(check) if kind == "rule" else check))
        engine.scheduler.add_requests(reqs)
        engine.run_until_idle()
        results[kind] = [(r.steps, r.halt_reason, r.answer) for r in reqs]
    assert results["rule"] == results["plain"]
    reasons = [reason for _, reason, _ in results["rule"]]
    assert reasons.count("verified") >= 4 and max(steps for steps, _, _ in results["rule"]) > 1
    assert calls["rule"] == reasons.count("verified") < calls["plain"]  # Python ran only for the winners


# ---- the device fallback -------------------------------------------------------------------------------
def test_cpu_fallback_is_only_auto_in_a_cuda_build():
    cpu = torch.device("cpu")
    assert is_cpu_fallback("auto", cpu, cuda_build="12.8", cuda_available=False)
    assert not is_cpu_fallback("cpu", cpu, cuda_build="12.8", cuda_available=False)  # asked for
    assert not is_cpu_fallback("auto", cpu, cuda_build="", cuda_available=False)  # a CPU build
    with on_device(cpu), side_stream(cpu):  # the CUDA helpers are no-ops off CUDA
        pass


async def test_auto_on_a_cuda_build_without_gpu_is_loud(checkpoints, monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # this torch "built for CUDA", no GPU present
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="service.engine.device"):
        async with serve(make_settings(checkpoints, names=("sudoku",), device="auto")) as (_, client):
            text = (await client.get("/metrics")).text
    assert "trm_device_fallback_cpu 1.0" in text
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "SERVING ON CPU" in r.getMessage()]
    assert len(warning) == 1 and "CUDA 12.8" in warning[0].getMessage()
    assert warning[0].getMessage().count("\n") >= 4  # framed, several lines
    assert not warn_cpu_fallback("cpu", torch.device("cpu"))
