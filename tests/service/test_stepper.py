"""service/engine/stepper.py: chunked and bucket-padded steps give every real row exactly its own result."""

from __future__ import annotations

import pytest
import torch

from service.engine.stepper import (
    BucketedStep,
    ChunkedStep,
    EagerStep,
    bucket_for,
    carry_rows,
    make_stepper,
    row_buckets,
)
from tests.conftest import tiny_model


def _model(**overrides):
    return tiny_model(seed=3, **overrides).double()  # float64: chunked vs whole agree to round-off only


def _carry(model, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    inputs = torch.randint(1, cfg.vocab_size, (n, cfg.seq_len), generator=g, dtype=torch.int32)
    pids = torch.randint(0, cfg.num_puzzle_identifiers, (n,), generator=g, dtype=torch.int32)
    with torch.inference_mode():
        carry = model.empty_carry(n)
        carry = model.reset_rows(carry, torch.ones(n, dtype=torch.bool), inputs, pids)
        carry, _ = model.step(carry)  # a carry mid-flight, not fresh H_init/L_init
    return carry


def _assert_same_step(a, b, exact: bool = False):
    (ca, oa), (cb, ob) = a, b
    check = torch.equal if exact else (lambda x, y: torch.allclose(x, y, rtol=1e-10, atol=1e-12))
    for name, t in ca.tensors().items():
        u = cb.tensors()[name]
        assert t.shape == u.shape and check(t, u), name
    for x, y in ((oa.logits, ob.logits), (oa.q_halt_logits, ob.q_halt_logits)):
        assert x.shape == y.shape and check(x, y)


def test_row_buckets_are_powers_of_two_up_to_the_pool():
    assert row_buckets(1) == [1]
    assert row_buckets(8) == [1, 2, 4, 8]
    assert row_buckets(10) == [1, 2, 4, 8, 10]
    assert [bucket_for(n, row_buckets(10)) for n in (1, 2, 3, 5, 8, 9, 10)] == [1, 2, 4, 8, 8, 10, 10]
    with pytest.raises(ValueError, match="exceed"):
        bucket_for(11, row_buckets(10))
    with pytest.raises(ValueError):
        row_buckets(0)


@pytest.mark.parametrize("mlp_t", [False, True])
def test_chunked_step_equals_one_batch(mlp_t):
    model = _model(mlp_t=mlp_t, pos_encodings="none" if mlp_t else "rope")
    carry = _carry(model, 7)
    with torch.inference_mode():
        whole = model.step(carry)
        for k in (1, 3, 7, 16):
            _assert_same_step(ChunkedStep(model, k)(carry), whole)


def test_bucketed_padding_never_changes_real_rows():
    model = _model()
    carry = _carry(model, 5)
    step = BucketedStep(model, max_rows=12)
    with torch.inference_mode():
        first = step(carry)
        assert step.buckets == [1, 2, 4, 8, 12] and set(step._static) == {8}
        # Garbage in the 3 padded rows of the 8-row bucket: the 5 real rows come out bit for bit the same.
        static = step.static_inputs(8)
        for t in static.tensors().values():
            if t.is_floating_point():
                t[5:] = torch.randn_like(t[5:]) * 1e3
            else:
                t[5:] = 1
        second = step(carry)
        _assert_same_step(second, first, exact=True)
        # And they are the rows' own results, as stepping exactly 5 rows gives.
        _assert_same_step(first, model.step(carry))


def test_bucketed_outputs_survive_the_next_step():
    model = _model()
    step = BucketedStep(model, max_rows=4)
    a, b = _carry(model, 3, seed=1), _carry(model, 3, seed=2)
    with torch.inference_mode():
        ra = step(a)
        kept = ra[1].logits.clone()
        step(b)  # same bucket, same static buffers
        assert torch.equal(ra[1].logits, kept)


def test_bucketed_step_through_a_whole_pool_of_sizes():
    """Every prefix size 1..max through the buckets equals eager stepping of that prefix."""
    model = _model()
    pool = _carry(model, 6, seed=4)
    step = BucketedStep(model, max_rows=6)
    with torch.inference_mode():
        for n in range(1, 7):
            view = carry_rows(pool, 0, n)
            _assert_same_step(step(view), model.step(view))


def test_make_stepper_by_device_and_setting():
    model = _model()
    assert isinstance(make_stepper(model, 8, cpu_chunk_rows=4), ChunkedStep)
    assert isinstance(make_stepper(model, 8, cpu_chunk_rows=0), EagerStep)
    # CUDA graphs are a CUDA setting: on CPU the flag changes nothing.
    assert isinstance(make_stepper(model, 8, cpu_chunk_rows=0, cuda_graphs=True), EagerStep)
    assert not BucketedStep(model, 8, use_graphs=True).use_graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_eager_bf16():
    from service.engine.stepper import prepare_model

    model = prepare_model(tiny_model(seed=3).cuda())
    carry = _carry(model, 5)
    step = BucketedStep(model, max_rows=8)
    with torch.inference_mode():
        got = step(carry)
        assert not step.capture_failed and 8 in step.captured
        ref = model.step(carry)
    for x, y in ((got[1].logits, ref[1].logits), (got[1].q_halt_logits, ref[1].q_halt_logits)):
        torch.testing.assert_close(x.float(), y.float(), rtol=2e-2, atol=2e-2)


def test_runner_with_chunks_answers_as_without():
    """Through the engine (admissions mid-flight, a moving prefix): chunked stepping changes no answer."""
    from service.engine.core import Engine
    from service.engine.scheduler import Request

    model = _model()
    g = torch.Generator().manual_seed(5)
    inputs = torch.randint(1, 11, (11, 81), generator=g, dtype=torch.int32)
    answers = {}
    for chunk in (0, 3):
        engine = Engine.for_model(model, 5, 100, runner_options={"cpu_chunk_rows": chunk})
        assert type(engine.runner.stepper).__name__ == ("ChunkedStep" if chunk else "EagerStep")
        reqs = [Request(request_id=str(i), inputs=inputs[i], max_steps=1 + i % 4, halting="fixed") for i in range(11)]
        engine.scheduler.add_requests(reqs)
        engine.run_until_idle()
        answers[chunk] = [(r.steps, r.answer, r.q_halt_logit) for r in reqs]
    assert [a[:2] for a in answers[0]] == [a[:2] for a in answers[3]]
    assert all(abs(a[2] - b[2]) < 1e-9 for a, b in zip(answers[0], answers[3], strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_on_a_device_that_is_not_current_pass_the_self_check():
    """The model on the last GPU while cuda:0 is current (with one GPU: the same device): every bucket is
    captured on the model's device, passes the start-up self-check, and replays the rows' own step."""
    from service.engine.stepper import prepare_model, step_mismatch

    dev = torch.device(f"cuda:{torch.cuda.device_count() - 1}")
    torch.cuda.set_device(0)
    model = prepare_model(tiny_model(seed=3).to(dev))
    step = BucketedStep(model, max_rows=8)
    assert step.capture_all() == {"captured": [1, 2, 4, 8], "fallback": []}
    carry = _carry(model, 5)
    with torch.inference_mode():
        assert step_mismatch(step(carry), model.step(carry)) < 2 ** -5
    assert torch.cuda.current_device() == 0
