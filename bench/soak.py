"""Soak: a real `trm serve` on loopback under ~3x its capacity, SIGTERM mid-load; prints one JSON object.

Three phases, each against a fresh server process (bundled model unless --model):

1. big_batch: max-size batch bodies (as many puzzles as TRM_MAX_BODY_BYTES holds, ~11,700), one
   at a time and then four at a time, back to back for --big-batch-s each, while /healthz is
   probed every 20 ms: the batches must be refused (422, over TRM_MAX_QUEUE) without stalling
   the event loop.
2. soak: capacity is measured from one full pool (slots / (mean steps x step time)), then Poisson
   arrivals at --load x capacity for --duration s with SIGTERM at --sigterm-at s; traffic goes on
   until the process has exited. Every answer is checked against the puzzle's answer computed
   alone before the load (cross-talk = the answer of another puzzle).
3. deadline: TRM_REQUEST_TIMEOUT_S=--deadline-s, --deadline-clients closed-loop clients that
   honour Retry-After (at most 1 s), for --deadline-phase-s: goodput (200) against 504.

Bounded (every phase has a time limit, clients have timeouts) and loopback only. Targets: 0 lost,
0 cross-talk, 0 server errors (5xx other than the documented 503/504), 0 tracebacks in the logs,
every 429/503 with Retry-After, exit within TRM_DRAIN_TIMEOUT_S of SIGTERM, /healthz p99 < 100 ms
while max-size batches are refused (one sender, and four sending back to back), and more 200s than
504s at a 0.5 s deadline.

    python bench/soak.py                      # ~3 min on a 2-core CPU
    python bench/soak.py --duration 20 --deadline-phase-s 10 --big-batch-s 4   # quicker
    python bench/soak.py --phases big_batch --big-batch-s 6                   # the event loop under 1 MB bodies
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PUZZLES = ROOT.parent / "shared" / "data" / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_puzzles(path: Path, n: int) -> list[str]:
    rows = path.read_text().splitlines()[1:n + 1]
    return [row.split(",")[1] for row in rows]


class Server:
    """`python -m service` on a free loopback port, stderr to a log file."""

    def __init__(self, env: dict[str, str], model: str | None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="trm-soak-", suffix=".log", delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
        full_env.update(TRM_HOST="127.0.0.1", TRM_PORT=str(self.port), TRM_DEVICE="cpu", TRM_TORCH_THREADS="1",
                        TRM_LOG_LEVEL="info", **env)
        if model:
            full_env["TRM_MODELS"] = model
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], env=full_env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited during start-up:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def tracebacks(self) -> int:
        return self.log_text().count("Traceback")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 4)


class HealthProbe(threading.Thread):
    """GET /healthz every 20 ms on its own thread and connection, so the load's client loop (which
    serialises megabyte bodies) does not delay the probe and only the server's latency is measured."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.latencies, self.failures, self.stop = base, [], 0, threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.get("/healthz")
                    self.latencies.append(time.perf_counter() - t0)
                except httpx.TransportError:
                    self.failures += 1
                    if self.failures > 3:
                        return  # the server is gone (end of the soak)
                self.stop.wait(0.02)

    def finish(self) -> list[float]:
        self.stop.set()
        self.join(15)
        return self.latencies


# ---- phase 1 ----------------------------------------------------------------------------------
async def big_batch_phase(server: Server, puzzles: list[str], seconds: float, max_body: int, senders: int) -> dict:
    per = len(json.dumps(puzzles[0])) + 2
    n = (max_body - 64) // per
    body = json.dumps({"puzzles": [puzzles[i % len(puzzles)] for i in range(n)]}).encode()
    while len(body) > max_body:
        n -= 50
        body = json.dumps({"puzzles": [puzzles[i % len(puzzles)] for i in range(n)]}).encode()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    stop = asyncio.Event()
    probe = HealthProbe(server.base)
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        async def sender() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                resp = await client.post("/v1/sudoku/solve", content=body,
                                         headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - t0)
                statuses[str(resp.status_code)] += 1
        probe.start()
        tasks = [asyncio.create_task(sender()) for _ in range(senders)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
    health = probe.finish()
    return {"senders": senders, "puzzles_per_batch": n, "body_bytes": len(body), "batches": dict(statuses),
            "batch_p50_s": pct(latencies, 0.5), "healthz_samples": len(health), "healthz_p50_s": pct(health, 0.5),
            "healthz_p99_s": pct(health, 0.99), "healthz_max_s": pct(health, 1.0)}


# ---- phase 2 ----------------------------------------------------------------------------------
def key(solution: list[list[int]]) -> str:
    return "".join(str(d) for row in solution for d in row)


async def expected_answers(server: Server, puzzles: list[str]) -> dict[str, str]:
    """Each puzzle's answer with nothing else in the pool (the reference for cross-talk)."""
    out = {}
    async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
        for p in puzzles:
            resp = await client.post("/v1/sudoku/solve", json={"puzzle": p})
            resp.raise_for_status()
            out[p] = key(resp.json()["solution"])
    return out


def calibrate(server: Server, puzzles: list[str], slots: int) -> dict:
    """Capacity in requests/s: a full pool of rows (one batch) gives the full-pool step time and the
    mean steps per row; continuous batching refills each slot as its row halts, so capacity is
    slots / (mean steps x full-pool step time)."""
    batch = [puzzles[i % len(puzzles)] for i in range(slots)]
    t0 = time.perf_counter()
    resp = httpx.post(f"{server.base}/v1/sudoku/solve", json={"puzzles": batch}, timeout=600)
    elapsed = time.perf_counter() - t0
    resp.raise_for_status()
    steps = [r["steps"] for r in resp.json()["results"]]
    step_s = elapsed / max(steps)
    mean_steps = sum(steps) / len(steps)
    return {"capacity_rps": slots / (mean_steps * step_s), "full_pool_step_s": round(step_s, 4),
            "mean_steps": round(mean_steps, 2)}


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.after_sigterm: Counter[str] = Counter()
        self.lost = self.cross_talk = self.mismatch = self.no_retry_after = self.refused_after_exit = 0
        self.connect_timeouts = self.reset_at_exit = 0
        self.lost_examples: list[str] = []
        self.latencies: list[float] = []


async def soak_phase(server: Server, puzzles: list[str], expected: dict[str, str], rate: float, duration: float,
                     sigterm_at: float, tally: Tally, health: list[float]) -> dict:
    by_answer = {v: k for k, v in expected.items()}
    rng = random.Random(0)
    t_start = time.monotonic()
    state = {"sigterm": None, "exited": None}
    tasks: set[asyncio.Task] = set()
    late_errors: list[tuple[float, str]] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.base, timeout=httpx.Timeout(120, connect=30),
                                 limits=limits) as client:
        async def one(puzzle: str) -> None:
            sent_after_term = state["sigterm"] is not None
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/sudoku/solve", json={"puzzle": puzzle})
            except httpx.ConnectTimeout:  # never sent: the accept backlog or this client's loop was too slow
                tally.connect_timeouts += 1
                return
            except httpx.ConnectError:
                if state["sigterm"] is not None:
                    tally.refused_after_exit += 1  # the port closed after the drain: expected
                    return
                tally.lost += 1
                tally.lost_examples.append("connect refused before SIGTERM")
                return
            except httpx.HTTPError as e:
                if state["sigterm"] is not None:  # judged against the exit time at the end
                    late_errors.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                    return
                tally.lost += 1
                if len(tally.lost_examples) < 5:
                    tally.lost_examples.append(f"{type(e).__name__}: {e} ({time.monotonic() - t_start:.2f}s in)")
                return
            code = str(resp.status_code)
            tally.statuses[code] += 1
            if sent_after_term or state["sigterm"] is not None:
                tally.after_sigterm[code] += 1
            if resp.status_code in (429, 503) and "retry-after" not in resp.headers:
                tally.no_retry_after += 1
            if resp.status_code == 200:
                tally.latencies.append(time.perf_counter() - t0)
                answer = key(resp.json()["solution"])
                if answer != expected[puzzle]:
                    if by_answer.get(answer, puzzle) != puzzle:
                        tally.cross_talk += 1
                    else:
                        tally.mismatch += 1

        async def watch_exit() -> None:
            while server.proc.poll() is None:
                await asyncio.sleep(0.01)
            state["exited"] = time.monotonic()

        probe = HealthProbe(server.base)
        probe.start()
        exit_watch = asyncio.create_task(watch_exit())
        next_t = t_start
        while True:
            now = time.monotonic()
            if state["sigterm"] is None and now - t_start >= sigterm_at:
                server.proc.send_signal(signal.SIGTERM)
                state["sigterm"] = now
            if state["exited"] is not None or now - t_start >= duration + 120:
                break
            if now - t_start < duration or state["sigterm"] is not None:
                if now >= next_t:
                    task = asyncio.create_task(one(rng.choice(puzzles)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_t += rng.expovariate(rate)
                    continue
            await asyncio.sleep(min(0.005, max(0.0, next_t - now)))
        health.extend(probe.finish())
        await asyncio.gather(*tasks, return_exceptions=True)
        exit_watch.cancel()
    for t, what in late_errors:
        # In the last second before the process exited, the port had closed after the drain: a reset
        # then is a refused connection, as in any shutdown. Earlier, it is a lost request.
        if state["exited"] is not None and t >= state["exited"] - 1.0:
            tally.reset_at_exit += 1
        else:
            tally.lost += 1
            tally.lost_examples.append(f"{what} ({t - t_start:.2f}s in, during the drain)")
    exit_s = (state["exited"] - state["sigterm"]) if state["exited"] and state["sigterm"] else None
    return {"sigterm_at_s": round(state["sigterm"] - t_start, 2) if state["sigterm"] else None,
            "exit_s": round(exit_s, 2) if exit_s is not None else None, "exit_code": server.proc.returncode}


# ---- phase 3 ----------------------------------------------------------------------------------
async def deadline_phase(server: Server, puzzles: list[str], clients: int, seconds: float) -> dict:
    statuses: Counter[str] = Counter()
    no_retry_after = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=server.base, timeout=60,
                                 limits=httpx.Limits(max_connections=clients + 8)) as client:
        async def loop(i: int) -> None:
            nonlocal no_retry_after
            rng = random.Random(100 + i)
            while time.monotonic() < stop:
                resp = await client.post("/v1/sudoku/solve", json={"puzzle": rng.choice(puzzles)})
                statuses[str(resp.status_code)] += 1
                if resp.status_code in (429, 503):
                    if "retry-after" not in resp.headers:
                        no_retry_after += 1
                    await asyncio.sleep(min(1.0, float(resp.headers.get("retry-after", 1))))
        await asyncio.gather(*(loop(i) for i in range(clients)))
    return {"clients": clients, "seconds": seconds, "statuses": dict(statuses),
            "goodput_per_s": round(statuses["200"] / seconds, 2), "no_retry_after": no_retry_after}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="TRM_MODELS for the server (default: the bundled checkpoints)")
    p.add_argument("--puzzles", type=Path, default=DEFAULT_PUZZLES, help="Sudoku CSV (source,question,answer,...)")
    p.add_argument("--num-puzzles", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--sigterm-at", type=float, help="seconds into the load (default: half of --duration)")
    p.add_argument("--load", type=float, default=3.0, help="arrival rate as a multiple of measured capacity")
    p.add_argument("--drain-timeout", type=float, default=15.0, help="TRM_DRAIN_TIMEOUT_S of the soak server")
    p.add_argument("--max-queue", type=int, default=256, help="TRM_MAX_QUEUE of the soak server")
    p.add_argument("--big-batch-s", type=float, default=8.0)
    p.add_argument("--deadline-s", type=float, default=0.5)
    p.add_argument("--deadline-clients", type=int, default=40)
    p.add_argument("--deadline-phase-s", type=float, default=20.0)
    p.add_argument("--phases", default="big_batch,soak,deadline", help="comma-separated subset to run")
    args = p.parse_args()
    phases = set(args.phases.split(","))
    puzzles = load_puzzles(args.puzzles, args.num_puzzles)
    result: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    big_tracebacks = 0
    if "big_batch" in phases:
        big = Server({}, args.model)
        try:
            big.wait_ready()
            result["big_batch"] = [asyncio.run(big_batch_phase(big, puzzles, args.big_batch_s, 1_000_000, senders))
                                   for senders in (1, 4)]
        finally:
            big.stop()
        big_tracebacks = big.tracebacks()
    if "soak" in phases:
        result["soak"] = run_soak(args, puzzles)
    if "deadline" in phases:
        dl = Server({"TRM_REQUEST_TIMEOUT_S": str(args.deadline_s)}, args.model)
        try:
            dl.wait_ready()
            result["deadline"] = asyncio.run(deadline_phase(dl, puzzles, args.deadline_clients, args.deadline_phase_s))
        finally:
            dl.stop()
        result["deadline"]["deadline_s"] = args.deadline_s
        result["deadline"]["tracebacks"] = dl.tracebacks()
    targets = {}
    if "soak" in phases:
        s = result["soak"]
        targets |= {"lost_0": s["lost"] == 0, "cross_talk_0": s["cross_talk"] == 0,
                    "server_errors_0": s["server_errors_5xx"] == 0, "soak_tracebacks_0": s["tracebacks"] == 0,
                    "soak_retry_after_always": s["429_503_without_retry_after"] == 0,
                    "exit_within_drain_timeout": s["exit_within_drain_timeout"]}
    if "big_batch" in phases:
        one, four = result["big_batch"]
        targets |= {"big_batch_tracebacks_0": big_tracebacks == 0,
                    "healthz_p99_under_100ms_while_a_max_size_batch_is_refused": (one["healthz_p99_s"] or 1e9) < 0.1,
                    "healthz_p99_under_100ms_with_four_max_size_batches_back_to_back":
                        (four["healthz_p99_s"] or 1e9) < 0.1}
    if "deadline" in phases:
        d = result["deadline"]
        targets |= {"more_200_than_504_at_deadline": d["statuses"].get("200", 0) > d["statuses"].get("504", 0),
                    "deadline_retry_after_always": d["no_retry_after"] == 0,
                    "deadline_tracebacks_0": d["tracebacks"] == 0}
    result["targets"] = targets
    print(json.dumps(result))


def run_soak(args: argparse.Namespace, puzzles: list[str]) -> dict:
    soak = Server({"TRM_DRAIN_TIMEOUT_S": str(args.drain_timeout), "TRM_MAX_QUEUE": str(args.max_queue)}, args.model)
    tally, health = Tally(), []
    try:
        soak.wait_ready()
        slots = httpx.get(f"{soak.base}/readyz").json()["models"]
        num_slots = next(m["slots"] for name, m in slots.items() if "sudoku" in name or len(slots) == 1)
        expected = asyncio.run(expected_answers(soak, puzzles))
        calibration = calibrate(soak, puzzles, num_slots)
        capacity = calibration["capacity_rps"]
        rate = args.load * capacity
        sigterm_at = args.sigterm_at if args.sigterm_at is not None else args.duration / 2
        shutdown = asyncio.run(soak_phase(soak, puzzles, expected, rate, args.duration, sigterm_at, tally, health))
    finally:
        soak.stop()
    finite = [h for h in health if h != float("inf")]
    return {
        **calibration, "capacity_rps": round(capacity, 2), "offered_rps": round(rate, 2), "slots": num_slots,
        "requests": sum(tally.statuses.values()) + tally.lost + tally.refused_after_exit + tally.connect_timeouts
        + tally.reset_at_exit,
        "statuses": dict(tally.statuses), "lost": tally.lost, "lost_examples": tally.lost_examples,
        "connect_timeouts": tally.connect_timeouts, "reset_at_exit": tally.reset_at_exit,
        "cross_talk": tally.cross_talk, "answer_mismatch_not_cross_talk": tally.mismatch,
        "server_errors_5xx": sum(v for k, v in tally.statuses.items() if k.startswith("5") and k not in ("503", "504")),
        "5xx_total": sum(v for k, v in tally.statuses.items() if k.startswith("5")),
        "429_503_without_retry_after": tally.no_retry_after, "shutdown_answers": dict(tally.after_sigterm),
        "refused_after_exit": tally.refused_after_exit, **shutdown, "drain_timeout_s": args.drain_timeout,
        "exit_within_drain_timeout": shutdown["exit_s"] is not None and shutdown["exit_s"] <= args.drain_timeout,
        "latency_200_p50_s": pct(tally.latencies, 0.5), "latency_200_p99_s": pct(tally.latencies, 0.99),
        "healthz_p99_s": pct(finite, 0.99), "tracebacks": soak.tracebacks(), "log": soak.log.name}


if __name__ == "__main__":
    main()
