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
  Padded rows compute on stale, finite data and are never read. If capture fails the stepper logs
  one line and steps eagerly. Without CUDA the same class runs the padded bucket eagerly, which is
  how the bucketing and padding are tested on CPU.

On CUDA the model runs in bfloat16 (TRM.forward_dtype); `prepare_model` also stores its parameters
in bfloat16 once, which gives the same numbers as the per-step cast it replaces (float32 -> bfloat16
is one rounding either way) without the cast kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch

from trm_core import TRM, Carry, StepOutput

__all__ = ["Stepper", "EagerStep", "ChunkedStep", "BucketedStep", "row_buckets", "bucket_for", "make_stepper",
           "prepare_model", "carry_rows", "cat_steps"]

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


class BucketedStep:
    """Pad n rows to a row-count bucket, on static per-bucket buffers; CUDA graphs where available.

    Args:
        model: in eval mode, on its serving device.
        max_rows: the pool size (the largest bucket).
        use_graphs: capture a CUDA graph per bucket (CUDA only; ignored elsewhere).
        run_eager: test hook, the step used for an uncaptured bucket (default `model.step`).
    """

    def __init__(self, model: TRM, max_rows: int, *, use_graphs: bool = True,
                 run_eager: Callable[[Carry], tuple[Carry, StepOutput]] | None = None) -> None:
        self.model = model
        self.buckets = row_buckets(max_rows)
        self.use_graphs = use_graphs and model.device.type == "cuda"
        self._run_eager = run_eager or model.step
        self._static: dict[int, Carry] = {}  # bucket -> input buffers
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Carry, StepOutput]] = {}
        self._pool = None  # one CUDA memory pool shared by every bucket's graph
        self.capture_failed = False

    def static_inputs(self, bucket: int) -> Carry:
        if bucket not in self._static:
            with torch.inference_mode():
                self._static[bucket] = self.model.empty_carry(bucket)
        return self._static[bucket]

    def capture_all(self) -> None:
        """Capture every bucket's graph now (start-up), instead of at each bucket's first use."""
        for b in self.buckets:
            if self.capture_failed or not self.use_graphs:
                return
            self._graph(b)

    def _graph(self, bucket: int) -> tuple[torch.cuda.CUDAGraph, Carry, StepOutput] | None:
        if not self.use_graphs or self.capture_failed:
            return None
        if bucket in self._graphs:
            return self._graphs[bucket]
        static = self.static_inputs(bucket)
        try:
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up outside the graph (allocator, kernel selection)
                    for _ in range(2):
                        self.model.step(static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                with torch.cuda.graph(graph, pool=self._pool):
                    out_carry, out = self.model.step(static)
        except Exception as e:  # capture is an optimisation: any failure means eager steps, said once
            self.capture_failed = True
            self._graphs.clear()
            logger.warning("CUDA graph capture failed at %d rows (%s: %s); stepping eagerly", bucket,
                           type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        self._graphs[bucket] = (graph, out_carry, out)
        return self._graphs[bucket]

    def __call__(self, carry: Carry) -> tuple[Carry, StepOutput]:
        n = carry.batch_size
        bucket = bucket_for(n, self.buckets)
        static = self.static_inputs(bucket)
        for name, t in carry.tensors().items():  # rows >= n keep whatever they held: finite, never read
            getattr(static, name)[:n].copy_(t)
        captured = self._graph(bucket)
        if captured is not None:
            graph, out_carry, out = captured
            graph.replay()
        else:
            out_carry, out = self._run_eager(static)
        # Clones: the graph's outputs are overwritten by its next replay.
        return (Carry(**{name: t[:n].clone() for name, t in out_carry.tensors().items()}),
                StepOutput(logits=out.logits[:n].clone(), q_halt_logits=out.q_halt_logits[:n].clone(),
                           q_continue_logits=out.q_continue_logits[:n].clone()))


def prepare_model(model: TRM) -> TRM:
    """On CUDA: parameters stored in bfloat16 once (the step casts them at every call otherwise). In place.

    Only parameters: buffers keep their dtype (the RoPE tables stay float32, as the rotation is
    computed in float32; H_init/L_init are cast per use as before).
    """
    if model.device.type == "cuda":
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)
    return model


def make_stepper(model: TRM, max_rows: int, *, cpu_chunk_rows: int = 0, cuda_graphs: bool = True) -> Stepper:
    """The stepper for the model's device: CUDA graphs per bucket on CUDA (when enabled), chunks on
    CPU (when `cpu_chunk_rows` > 0), otherwise eager."""
    if model.device.type == "cuda" and cuda_graphs:
        return BucketedStep(model, max_rows, use_graphs=True)
    if model.device.type == "cpu" and cpu_chunk_rows > 0:
        return ChunkedStep(model, cpu_chunk_rows)
    return EagerStep(model)
