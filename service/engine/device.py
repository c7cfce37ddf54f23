"""Device plumbing shared by the runner, the stepper and adaptation: which device is current, on
which stream work runs, and whether `TRM_DEVICE=auto` quietly fell back to the CPU.

Everything CUDA-specific here is guarded: on a CPU the helpers are no-ops, so the code that uses
them runs (and is tested) unchanged on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

__all__ = ["on_device", "side_stream", "is_cpu_fallback", "warn_cpu_fallback"]

logger = logging.getLogger(__name__)


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` the current CUDA device for the block (a no-op off CUDA).

    Tensor ops follow their tensors' device on their own, but the stream, event, memory-pool and
    CUDA-graph APIs act on the *current* device: with the model on cuda:1 and cuda:0 current, a
    graph captured without this records nothing of the model's kernels.
    """
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def side_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a stream of its own on `device` (CUDA), then wait for it; a no-op elsewhere.

    ARC adaptation trains on its own thread; on the default stream its kernels would queue behind
    and in front of the serving steps. On a side stream they overlap. The wait at the end makes
    whatever the block produced safe to read from any other stream afterwards.
    """
    if device.type != "cuda":
        yield
        return
    with torch.cuda.device(device):
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))  # inputs written on the caller's stream
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            stream.synchronize()


def is_cpu_fallback(requested: str, chosen: torch.device, *, cuda_build: str | None = None,
                    cuda_available: bool | None = None) -> bool:
    """True when `TRM_DEVICE=auto` chose the CPU although torch was built for CUDA (the CUDA image
    started without a GPU or driver): the service then works, only many times slower.

    `cuda_build` / `cuda_available` default to this process's torch (`torch.version.cuda`,
    `torch.cuda.is_available()`); tests pass them to play a CUDA image on a CPU host.
    """
    if requested != "auto" or chosen.type != "cpu":
        return False
    build = torch.version.cuda if cuda_build is None else cuda_build
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return bool(build) and not available


def warn_cpu_fallback(requested: str, chosen: torch.device, **probe: object) -> bool:
    """Log a framed WARNING when `is_cpu_fallback`; returns whether it did."""
    if not is_cpu_fallback(requested, chosen, **probe):  # type: ignore[arg-type]
        return False
    build = probe.get("cuda_build") or torch.version.cuda
    bar = "!" * 78
    logger.warning("\n%s\n!! SERVING ON CPU: TRM_DEVICE=auto found no usable GPU, but this torch is built for "
                   "CUDA %s.\n!! Every ACT step runs on the CPU, many times slower than on a GPU.\n"
                   "!! Check `nvidia-smi` and that the container was started with --gpus (or the k8s GPU "
                   "resource);\n!! set TRM_DEVICE=cpu to mean it (this warning and the gauge "
                   "trm_device_fallback_cpu go away).\n%s", bar, build, bar)
    return True
