"""`trm serve` as users run it: a real uvicorn process on a real port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.conftest import wait_ready
from tests.service.conftest import sudoku_puzzles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_trm_serve_answers_over_tcp_and_stops_cleanly(checkpoints):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(TRM_MODELS=f"tiny={checkpoints['sudoku']}", TRM_DEVICE="cpu", TRM_PORT=str(port),
               TRM_TORCH_THREADS="1", TRM_LOG_LEVEL="info")
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(proc, base)
        resp = httpx.post(f"{base}/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0], "max_steps": 2}, timeout=10)
        assert resp.status_code == 200 and resp.json()["steps"] == 2 and resp.json()["model"] == "tiny"
        assert "trm_requests_total" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so -SIGTERM is the normal exit.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "drained cleanly" in err and "Traceback" not in err
