"""How the model runner computes one ACT step over the stepped prefix of the pool, per device.

The runner hands a `Carry` of n rows (the occupied prefix) to a stepper and gets `TRM.step`'s
result for those n rows back. Rows never interact inside a step (attention and the MLP-t mix
positions within a row; norms are per position), which is what lets a stepper split or pad the
batch without changing any row's result. Three of them:

- `EagerStep`: `model.step` as is.
- `ChunkedStep` (CPU, `TRM_CPU_CHUNK_ROWS`): the rows in chunks of a few. On a CPU the step's
  activations for many rows fall out of cache; the bundled Sudoku model took 1.4-1.6x less CPU time
  per puzzle-step in chunks of 8 rows than in one batch of 16-64 (bench/model.py, `chunked`).
- `BucketedStep` (CUDA, `TRM_CUDA_GRAPHS`): one CUDA graph per row-count bucket (1, 2, 4, ...,
  the pool size), each captured once on static buffers. A step of n rows copies them into the
  smallest bucket that holds them, replays that graph and reads the first n rows back. A step is
  some 40 small kernels per network application times H_cycles * (L_cycles + 1) applications, so at
  small batches a GPU otherwise waits on kernel launches; a replay launches them all at once.
  Padded rows compute on stale, finite data and are never read. Capture and replay run under the
  model's device. At start-up every bucket's first replay is compared with an eager step of the
  same rows; a bucket that differs beyond bf16 round-off steps eagerly (`BucketedStep.report`). If
  capture fails the stepper logs one line and steps eagerly. Without CUDA the same class runs the
  padded bucket eagerly, and a test-supplied `capture` stands in for the graph, which is how the
  bucketing, padding and self-check are tested on CPU.

On CUDA the model runs in bfloat16 (TRM.forward_dtype); `prepare_model` gives the runner a copy
whose parameters are stored in bfloat16, and leaves the registry's float32 model as it is.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Protocol

import torch

from service.engine.device import on_device
from trm_core import TRM, Carry, StepOutput

__all__ = ["Stepper", "EagerStep", "ChunkedStep", "BucketedStep", "row_buckets", "bucket_for", "make_stepper",
           "prepare_model", "carry_rows", "cat_steps", "step_mismatch", "SELF_CHECK_TOLERANCE"]

logger = logging.getLogger(__name__)


class Stepper(Protocol):
    def __call__(self, carry: Carry) -> tuple[Carry, StepOutput]: ...


def row_buckets(max_rows: int) -> list[int]:
    """1, 2, 4, ... up to (and always including) `max_rows`."""
    if max_rows < 1:
        raise ValueError(f"max_rows={max_rows}; at least 1")
    out, b = [], 1
    while b < max_rows:
        out.append(b)
        b *= 2
    return out + [max_rows]


def bucket_for(n: int, buckets: list[int]) -> int:
    """The smallest bucket that holds n rows."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"{n} rows exceed the largest bucket ({buckets[-1]})")


def carry_rows(carry: Carry, start: int, end: int) -> Carry:
    """Rows [start, end) of a carry, as views."""
    return Carry(**{name: t[start:end] for name, t in carry.tensors().items()})


def cat_steps(parts: list[tuple[Carry, StepOutput]]) -> tuple[Carry, StepOutput]:
    """Concatenate the results of stepping consecutive row ranges."""
    if len(parts) == 1:
        return parts[0]
    carries = [c for c, _ in parts]
    carry = Carry(**{name: torch.cat([c.tensors()[name] for c in carries]) for name in carries[0].tensors()})
    outs = [o for _, o in parts]
    return carry, StepOutput(logits=torch.cat([o.logits for o in outs]),
                             q_halt_logits=torch.cat([o.q_halt_logits for o in outs]),
                             q_continue_logits=torch.cat([o.q_continue_logits for o in outs]))


class EagerStep:
    def __init__(self, model: TRM) -> None:
        self.model = model

    def __call__(self, carry: Carry) -> tuple[Carry, StepOutput]:
        return self.model.step(carry)


class ChunkedStep:
    """`model.step` over consecutive chunks of `chunk_rows` rows (CPU: the activations stay in cache)."""

    def __init__(self, model: TRM, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows}; at least 1")
        self.model, self.chunk_rows = model, chunk_rows

    def __call__(self, carry: Carry) -> tuple[Carry, StepOutput]:
        n, k = carry.batch_size, self.chunk_rows
        if n <= k:
            return self.model.step(carry)
        return cat_steps([self.model.step(carry_rows(carry, s, min(n, s + k))) for s in range(0, n, k)])


Replay = Callable[[], tuple[Carry, StepOutput]]  # runs a captured bucket; returns its output buffers
Capture = Callable[[int, Carry], Replay]  # (bucket, its static inputs) -> the bucket's replay

# Self-check tolerance: a replay may differ from the eager step by bf16 round-off (a different kernel
# choice rounds differently), i.e. a few units of bf16's 2^-8 relative precision at the tensor's
# scale. A stale or empty capture differs by the size of the values themselves.
SELF_CHECK_TOLERANCE = 2.0 ** -5


def step_mismatch(got: tuple[Carry, StepOutput], want: tuple[Carry, StepOutput]) -> float:
    """Largest |got - want| over the step's float outputs, relative to the largest |want| of that tensor.

    NaN/inf where the reference is finite counts as an infinite mismatch.
    """
    (gc, go), (wc, wo) = got, want
    pairs = [(go.logits, wo.logits), (go.q_halt_logits, wo.q_halt_logits), (gc.z_H, wc.z_H), (gc.z_L, wc.z_L)]
    worst = 0.0
    for a, b in pairs:
        a, b = a.float(), b.float()
        if a.shape != b.shape:
            return math.inf
        if not torch.isfinite(a).all() and torch.isfinite(b).all():
            return math.inf
        scale = b.abs().max().item() if b.numel() else 0.0
        diff = (a - b).abs().max().item() if b.numel() else 0.0
        worst = max(worst, diff / max(scale, 1e-6))
    return worst


def _clone_step(step: tuple[Carry, StepOutput], n: int) -> tuple[Carry, StepOutput]:
    carry, out = step
    return (Carry(**{name: t[:n].clone() for name, t in carry.tensors().items()}),
            StepOutput(logits=out.logits[:n].clone(), q_halt_logits=out.q_halt_logits[:n].clone(),
                       q_continue_logits=out.q_continue_logits[:n].clone()))


class BucketedStep:
    """Pad n rows to a row-count bucket, on static per-bucket buffers; CUDA graphs where available.

    Every CUDA call (streams, the memory pool, capture, replay) runs under the model's device
    (`on_device`): with `TRM_DEVICE=cuda:1` the current device may well be cuda:0.

    At start-up (`capture_all`) each captured bucket is checked once: its first replay against an
    eager step of the same rows. A bucket whose replay differs beyond bf16 round-off is dropped
    and steps eagerly from then on (`fallback`, reported in /v1/models and /metrics), so a capture
    that went wrong costs speed, never answers.

    Args:
        model: in eval mode, on its serving device.
        max_rows: the pool size (the largest bucket).
        use_graphs: capture a graph per bucket (CUDA only, unless `capture` is given).
        run_eager: the step used for an uncaptured bucket and as the self-check's reference
            (default `model.step`).
        capture: (bucket, static inputs) -> replay; default: a CUDA graph. Tests pass another to
            exercise the bucket bookkeeping and the self-check on a CPU.
    """

    def __init__(self, model: TRM, max_rows: int, *, use_graphs: bool = True,
                 run_eager: Callable[[Carry], tuple[Carry, StepOutput]] | None = None,
                 capture: Capture | None = None) -> None:
        self.model = model
        self.device = model.device
        self.buckets = row_buckets(max_rows)
        self.use_graphs = use_graphs and (capture is not None or self.device.type == "cuda")
        self._run_eager = run_eager or model.step
        self._capture = capture or self._cuda_graph
        self._static: dict[int, Carry] = {}  # bucket -> input buffers
        self._replays: dict[int, Replay] = {}  # bucket -> replay of its captured step
        self.fallback: dict[int, float] = {}  # bucket -> self-check mismatch that made it step eagerly
        self._pool = None  # one CUDA memory pool shared by every bucket's graph
        self.capture_failed = False

    @property
    def captured(self) -> list[int]:
        return sorted(self._replays)

    def report(self) -> dict[str, list[int]]:
        """{"captured": buckets replaying a graph, "fallback": buckets that failed the self-check}."""
        return {"captured": self.captured, "fallback": sorted(self.fallback)}

    def static_inputs(self, bucket: int) -> Carry:
        if bucket not in self._static:
            with torch.inference_mode(), on_device(self.device):
                self._static[bucket] = self.model.empty_carry(bucket)
        return self._static[bucket]

    def capture_all(self, *, self_check: bool = True, seed: int = 0) -> dict[str, list[int]]:
        """Capture every bucket now (start-up) instead of at its first use, and self-check each."""
        for b in self.buckets:
            if self.capture_failed or not self.use_graphs:
                break
            if self._graph(b) is not None and self_check:
                self.self_check(b, seed=seed)
        return self.report()

    def self_check(self, bucket: int, *, seed: int = 0) -> float:
        """Replay `bucket` once on real rows (random tokens, one step in) and compare with the eager
        step of the same rows; beyond `SELF_CHECK_TOLERANCE` the bucket steps eagerly from now on.
        Returns the mismatch."""
        replay = self._graph(bucket)
        if replay is None:
            return 0.0
        rows = self._probe_rows(bucket, seed)
        with torch.inference_mode(), on_device(self.device):
            static = self._load(rows)
            got = _clone_step(replay(), bucket)
            want = self._run_eager(static)
        mismatch = step_mismatch(got, want)
        if not mismatch <= SELF_CHECK_TOLERANCE:  # also catches NaN
            del self._replays[bucket]
            self.fallback[bucket] = mismatch
            logger.warning("CUDA graph self-check: the %d-row bucket's replay differs from the eager step by "
                           "%.3g of the values' scale (tolerance %.3g); that bucket steps eagerly", bucket,
                           mismatch, SELF_CHECK_TOLERANCE)
        return mismatch

    def _probe_rows(self, bucket: int, seed: int) -> Carry:
        """`bucket` rows of random puzzles one step in (the start state alone is the same in every row)."""
        cfg = self.model.config
        g = torch.Generator().manual_seed(seed + bucket)
        inputs = torch.randint(1, cfg.vocab_size, (bucket, cfg.seq_len), generator=g, dtype=torch.int32)
        pids = torch.randint(0, max(1, cfg.num_puzzle_identifiers), (bucket,), generator=g, dtype=torch.int32)
        with torch.inference_mode(), on_device(self.device):
            carry = self.model.empty_carry(bucket)
            carry = self.model.reset_rows(carry, torch.ones(bucket, dtype=torch.bool), inputs, pids)
            carry, _ = self._run_eager(carry)
        return carry

    def _cuda_graph(self, bucket: int, static: Carry) -> Replay:
        """Capture `model.step(static)` as a CUDA graph on the model's device; returns its replay."""
        dev = self.device
        with on_device(dev):
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):  # warm-up outside the graph (allocator, kernel selection)
                for _ in range(2):
                    self.model.step(static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            # an explicit capture stream on `dev`: torch.cuda.graph's default one is created once per
            # process, on whichever device was current at the first capture
            with torch.cuda.graph(graph, pool=self._pool, stream=side):
                out_carry, out = self.model.step(static)

        def replay() -> tuple[Carry, StepOutput]:
            with on_device(dev):
                graph.replay()
            return out_carry, out

        return replay

    def _graph(self, bucket: int) -> Replay | None:
        if not self.use_graphs or self.capture_failed or bucket in self.fallback:
            return None
        if bucket in self._replays:
            return self._replays[bucket]
        static = self.static_inputs(bucket)
        try:
            with torch.inference_mode():
                replay = self._capture(bucket, static)
        except Exception as e:  # capture is an optimisation: any failure means eager steps, said once
            self.capture_failed = True
            self._replays.clear()
            logger.warning("CUDA graph capture failed at %d rows (%s: %s); stepping eagerly", bucket,
                           type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        self._replays[bucket] = replay
        return replay

    def _load(self, carry: Carry) -> Carry:
        """Copy the carry's n rows into the first n rows of its bucket's static buffers."""
        n = carry.batch_size
        static = self.static_inputs(bucket_for(n, self.buckets))
        for name, t in carry.tensors().items():  # rows >= n keep whatever they held: finite, never read
            getattr(static, name)[:n].copy_(t)
        return static

    def __call__(self, carry: Carry) -> tuple[Carry, StepOutput]:
        n = carry.batch_size
        static = self._load(carry)
        replay = self._graph(static.batch_size)
        with on_device(self.device):
            step = replay() if replay is not None else self._run_eager(static)
        return _clone_step(step, n)  # clones: a graph's outputs are overwritten by its next replay


def prepare_model(model: TRM, dtype: torch.dtype | None = None) -> TRM:
    """The model the service steps: on CUDA a copy whose parameters are stored in bfloat16.

    The copy is what the runner steps; `model` itself (the registry's, which ARC adaptation copies
    and evaluation reads) keeps its float32 parameters, so figures measured in float32 reproduce on
    the serving host. Storing bfloat16 once gives the same numbers as the per-step cast it replaces
    (float32 -> bfloat16 is one rounding either way) without the cast kernels.

    Only parameters are converted. Buffers (the puzzle table, H_init/L_init, the RoPE tables) are
    shared with `model`, not copied: the RoPE rotation is computed in float32, and adapted puzzle
    rows installed into `model`'s table are served once the copy follows it (`follow_puzzle_table`).

    Args:
        dtype: the parameters' serving dtype; default bfloat16 on CUDA, unchanged elsewhere (then
            `model` itself is returned). Tests pass bfloat16 to prepare a CUDA serve on a CPU.
    """
    if dtype is None:
        dtype = torch.bfloat16 if model.device.type == "cuda" else None
    if dtype is None or all(p.dtype == dtype for p in model.parameters()):
        return model
    memo: dict[int, object] = {id(b): b for b in model.buffers()}
    if model.puzzle_emb is not None:
        memo[id(model.puzzle_emb)] = model.puzzle_emb  # one table: installs into it reach the copy
    with torch.no_grad():
        for p in model.parameters():
            memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
    return copy.deepcopy(model, memo)


def follow_puzzle_table(served: TRM, master: TRM) -> None:
    """Point the served copy at the master's puzzle table after adapted rows were installed.

    The first install replaces the master's table module (an extension table that holds the loaded
    table by reference, so a paper-size table is never copied); the copy would keep reading the old
    module. One attribute store: a step running meanwhile reads the old table or the new one, both
    valid for the ids it was given. The table is read when rows are reset (eagerly, also with CUDA
    graphs), so captured graphs need no re-capture.
    """
    if served is not master:
        served.puzzle_emb = master.puzzle_emb
        served.config = master.config


def make_stepper(model: TRM, max_rows: int, *, cpu_chunk_rows: int = 0, cuda_graphs: bool = True) -> Stepper:
    """The stepper for the model's device: CUDA graphs per bucket on CUDA (when enabled), chunks on
    CPU (when `cpu_chunk_rows` > 0), otherwise eager."""
    if model.device.type == "cuda" and cuda_graphs:
        return BucketedStep(model, max_rows, use_graphs=True)
    if model.device.type == "cpu" and cpu_chunk_rows > 0:
        return ChunkedStep(model, cpu_chunk_rows)
    return EagerStep(model)
