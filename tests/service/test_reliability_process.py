"""`trm serve` as a real process on a real port: slow clients, the connection limit, and SIGTERM mid-load.

In-process tests cannot show these: the header timeout lives in the HTTP server, and uvicorn's own
shutdown (which cancelled handlers with a 500 before the app drained) only runs in a real server.
Marked slow (a process start imports torch); tests/service/test_reliability.py covers the same
middleware and drain in-process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import wait_ready
from tests.service.conftest import sudoku_puzzles
from tests.service.test_serve_process import _free_port

DRAIN_TIMEOUT_S = 3.0
FOREVER = {"halting": "fixed", "max_steps": 100_000}  # cannot finish within the drain


@contextmanager
def trm_serve(checkpoint, **env_overrides: str) -> Iterator[tuple[subprocess.Popen, str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(TRM_MODELS=f"tiny={checkpoint}", TRM_DEVICE="cpu", TRM_PORT=str(port), TRM_TORCH_THREADS="1",
               TRM_MAX_STEPS_LIMIT="100000", TRM_LOG_LEVEL="info", **env_overrides)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    return s


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_slow_clients_are_timed_out_and_connections_are_limited(checkpoints):
    with trm_serve(checkpoints["sudoku"], TRM_BODY_TIMEOUT_S="1", TRM_MAX_CONNECTIONS="4") as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        # A body that never completes: 408 problem+json, then the server closes the connection.
        t0 = time.monotonic()
        s = _raw(port, b"POST /v1/sudoku/solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n{\"puzzle\":")
        answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408") and b"application/problem+json" in answer, answer
        assert b"TRM_BODY_TIMEOUT_S" in answer and time.monotonic() - t0 < 5
        # Headers that never complete: the connection is closed.
        s = _raw(port, b"POST /v1/sudoku/solve HTTP/1.1\r\nHost: x\r\n")
        assert _read_all(s) == b""
        # Five open connections > TRM_MAX_CONNECTIONS=4: 503 + Retry-After; probes still pass.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        with httpx.Client(base_url=base, timeout=10) as client:
            refused = client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0], "max_steps": 1})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert client.get("/healthz").status_code == 200
        for sock in idle:  # the header timeout closes them, freeing the slots
            assert _read_all(sock) == b""
        ok = httpx.post(f"{base}/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0], "max_steps": 1}, timeout=10)
        assert ok.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_sigterm_mid_load_finishes_what_it_can_and_answers_the_rest_503(checkpoints):
    puzzles = sudoku_puzzles(8)
    env = dict(TRM_DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S), TRM_PRESTOP_S="0.5", TRM_MAX_BATCH="4")
    with trm_serve(checkpoints["sudoku"], **env) as (proc, base):
        results: dict[str, httpx.Response | Exception] = {}

        def post(name: str, body: dict) -> None:
            try:
                results[name] = httpx.post(f"{base}/v1/sudoku/solve", json=body, timeout=30)
            except Exception as e:  # a lost request: the test reports it
                results[name] = e

        # 3 rows that cannot finish, 2 that finish well within the drain, 3 waiting for a slot.
        bodies = {f"forever{i}": {"puzzle": puzzles[i], **FOREVER} for i in range(3)}
        bodies |= {f"short{i}": {"puzzle": puzzles[3 + i], "halting": "fixed", "max_steps": 30} for i in range(5)}
        threads = [threading.Thread(target=post, args=item) for item in bodies.items()]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=5).json()["models"]["tiny"]["running"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        # The pre-stop window: the port is open, readiness is off, new work gets 503 + Retry-After.
        ready = httpx.get(f"{base}/readyz", timeout=5)
        late = httpx.post(f"{base}/v1/sudoku/solve", json={"puzzle": puzzles[0], "max_steps": 1}, timeout=5)
        for resp in (ready, late):
            assert resp.status_code == 503 and resp.headers["content-type"] == "application/problem+json"
            assert int(resp.headers["retry-after"]) >= 1 and resp.headers["connection"] == "close"
        _, err = proc.communicate(timeout=30)
        exit_s = time.monotonic() - t_term
        for t in threads:
            t.join()
    statuses = {name: r.status_code if isinstance(r, httpx.Response) else repr(r) for name, r in results.items()}
    assert all(statuses[f"short{i}"] == 200 for i in range(5)), statuses
    for i in range(3):
        r = results[f"forever{i}"]
        assert isinstance(r, httpx.Response) and r.status_code == 503, statuses
        assert r.headers["content-type"] == "application/problem+json" and "retry-after" in r.headers
    assert proc.returncode == 0, err
    assert exit_s < DRAIN_TIMEOUT_S + 0.5, (exit_s, err)  # the budget, plus interpreter exit on a busy machine
    assert "Traceback" not in err and "graceful shutdown exceeded" not in err, err
    assert "drained with aborted requests" in err
