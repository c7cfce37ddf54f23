"""Shared factories: small real models and the path to ../shared (real data and golden fixtures)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from trm_core import TRM, TRMConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"


def tiny_config(**overrides) -> TRMConfig:
    """A real TRM small enough to step in milliseconds on CPU (hidden 32, Sudoku-shaped)."""
    base = dict(hidden_size=32, num_heads=2, expansion=2.0, L_layers=2, H_cycles=2, L_cycles=2,
                halt_max_steps=4, seq_len=81, vocab_size=11, puzzle_emb_ndim=32, puzzle_emb_len=2,
                num_puzzle_identifiers=3, pos_encodings="rope", task="sudoku", grid_height=9, grid_width=9)
    return TRMConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> TRM:
    torch.manual_seed(seed)
    model = TRM(tiny_config(**overrides))
    with torch.no_grad():  # a non-zero puzzle table and halting head, so tests see them matter
        if model.puzzle_emb is not None:
            model.puzzle_emb.weights.normal_()
        model.q_head.weight.normal_(std=0.1)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread for every test: on a shared 2-core machine two threads spinning against
    other jobs ran 10-100x slower, and the tests measure behaviour, not matmul speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The shared data (../shared: fixtures of the original implementation, the real data sets) is part of
# the test suite: a clone without it must fail, not pass with the tests that need it skipped. Set this
# variable to 1 to skip them instead, on a machine that knowingly has no copy.
ALLOW_MISSING_SHARED = "ALLOW_MISSING_SHARED"


def require_shared(path: Path, what: str = "shared data") -> Path:
    """`path` (under ../shared) or a failure naming it; a skip only with ALLOW_MISSING_SHARED=1."""
    if path.exists():
        return path
    message = f"{path} ({what} beside the checkout) is not present"
    if os.environ.get(ALLOW_MISSING_SHARED) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}; put the shared folder beside the checkout, or set {ALLOW_MISSING_SHARED}=1 to skip "
                "the tests that need it", pytrace=False)


@pytest.fixture
def shared() -> Path:
    return require_shared(SHARED)


def wait_ready(proc: subprocess.Popen, base: str, *, timeout_s: float = 60.0,
               why_exited: Callable[[], str] | None = None) -> None:
    """Poll an external server's /readyz until it answers 200, as Kubernetes would; fail the test if the
    process exits first (with `why_exited()` or its stderr) or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            detail = why_exited() if why_exited is not None else proc.communicate()[1]
            pytest.fail(f"server exited with {proc.returncode}:\n{detail}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server did not become ready in {timeout_s:.0f} s"
        time.sleep(0.05)
