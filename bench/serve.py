"""The service end to end on real puzzles, against the original inference procedure.

A bounded closed loop: `--clients` concurrent clients, each posting one real Sudoku at a time (the
next one as soon as the last answer arrives) until `--requests` answers are in. The puzzles are a
fixed, seeded mix of difficulties from ../shared/data/sudoku (see `MIXES`), the same list for every
mode, run with the bundled model. Modes:

    a  continuous batching + learned halting     (`trm serve`, HTTP on loopback)
    b  continuous batching + verified halting    (same server, `"halting": "verified"`)
    bs (b) with stalled rows stopped             (a server with TRM_STALL_STEPS, when the setting exists)
    c  request-level batching + learned halting  (a server with TRM_BATCHING=request)
    d  the original inference procedure: whole batches of `--slots` rows, every row runs
       halt_max_steps steps, no early exit (TRM.empty_carry / reset_rows / step, no HTTP, no server)
    d8 (d) stepping each batch in chunks of TRM_CPU_CHUNK_ROWS rows, as the service's CPU runner does:
       separates what the runner's chunking gives from what halting and scheduling give
    e  the service's engine without HTTP: the same registry, scheduler and worker thread as (a),
       requests submitted in-process

plus `idle`: one easy puzzle at a time on an idle server (p50 end to end, split into HTTP, queue wait
and compute from the response's `timings`), against the raw model's time for the same steps.

The server is a real `python -m service` subprocess (= `trm serve`) on 127.0.0.1. The client is a
minimal keep-alive HTTP/1.1 client on asyncio streams: on a 2-core machine the client shares the
CPU with the server, and a heavier client would be measured as service overhead.

    python bench/serve.py                     # 512 requests, 128 clients, 64 slots, 2 rounds (~10 min, 2 cores)
    python bench/serve.py --quick             # 192 requests, 32 clients, 16 slots, 1 round (~2 min)
    python bench/serve.py --modes d,e,a       # a subset

Prints one JSON line: per mode throughput (puzzles/s), latency p50/p95/p99 (s), slot occupancy, mean
steps, valid answers, errors; the ratios the targets of docs/benchmarks.md are stated in; machine and settings.
Throughput ratios come from one run on one machine: other jobs on a shared CPU move all modes alike
only when they run close together, so compare ratios, not absolute numbers, across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import os
import platform
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trm_core import TRM, load_checkpoint
from trm_core.tasks import sudoku

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "trm_core" / "pretrained" / "sudoku.safetensors"
DATA = ROOT.parent / "shared" / "data" / "sudoku"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the workload --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Puzzle:
    question: str  # 81 chars, '.' = blank
    answer: str  # 81 digits, the unique solution
    kind: str  # which part of the mix it came from


# kind -> (file, fraction of the blanks filled in from the solution). Revealing keeps a real puzzle
# real (same unique solution) and makes it easier: the bundled model solves ~3% of the forum list
# as given, ~73% at 10% revealed and ~99% at 30% (its model card).
SOURCES: dict[str, tuple[str, float]] = {
    "hard": ("forum_hardest_1905_11plus_test.csv.gz", 0.0),
    "magictour": ("magictour_top1465.csv", 0.0),
    "17clue": ("all_17_clue.csv.gz", 0.0),
    "reveal10": ("forum_hardest_1905_11plus_test.csv.gz", 0.1),
    "reveal30": ("forum_hardest_1905_11plus_test.csv.gz", 0.3),
    "reveal50": ("forum_hardest_1905_11plus_test.csv.gz", 0.5),
}
# "mixed": a quarter real puzzles as given (from three lists), three quarters easier versions.
MIXES: dict[str, dict[str, float]] = {
    "mixed": {"hard": 1 / 12, "magictour": 1 / 12, "17clue": 1 / 12,
              "reveal10": 0.25, "reveal30": 0.25, "reveal50": 0.25},
    "hard": {"hard": 1.0},
    "easy": {"reveal50": 1.0},
}


def _read_rows(path: Path, limit: int) -> list[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    out: list[tuple[str, str]] = []
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        next(reader)  # header: source,question,answer,rating
        for row in reader:
            out.append((row[1], row[2]))
            if len(out) >= limit:
                break
    return out


def _reveal(question: str, answer: str, fraction: float, rng: random.Random) -> str:
    blanks = [i for i, c in enumerate(question) if c in ".0"]
    chars = list(question)
    for i in rng.sample(blanks, round(fraction * len(blanks))):
        chars[i] = answer[i]
    return "".join(chars)


def build_workload(n: int, mix: dict[str, float], seed: int, data_dir: Path = DATA) -> list[Puzzle]:
    """n puzzles in a seeded random order; part sizes follow `mix`; no puzzle appears twice."""
    rng = random.Random(seed)
    counts = {k: int(round(w * n)) for k, w in mix.items()}
    counts[max(mix, key=mix.get)] += n - sum(counts.values())  # rounding goes to the largest part
    by_file: dict[str, list[tuple[str, str]]] = {}
    need: dict[str, int] = {}
    for kind, c in counts.items():
        need[SOURCES[kind][0]] = need.get(SOURCES[kind][0], 0) + c
    for file, c in need.items():
        by_file[file] = _read_rows(data_dir / file, c)
    cursor = dict.fromkeys(by_file, 0)
    out: list[Puzzle] = []
    for kind, c in counts.items():
        file, fraction = SOURCES[kind]
        for q, a in by_file[file][cursor[file]:cursor[file] + c]:
            out.append(Puzzle(_reveal(q, a, fraction, rng) if fraction else q, a, kind))
        cursor[file] += c
    rng.shuffle(out)
    return out


def is_valid(puzzle: Puzzle, answer_tokens: list[int]) -> bool:
    grid = sudoku.parse(puzzle.question)
    return not sudoku.verify(grid, sudoku.decode(answer_tokens))


# ---- summaries -----------------------------------------------------------------------------------
def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summarize(elapsed: float, lat: list[float], steps: list[int], valid: list[bool], errors: int,
              occupancy: float | None, cpu_s: dict[str, float], kinds: list[str] | None = None,
              reasons: list[str] | None = None, steady: tuple[list[float], float] | None = None) -> dict[str, Any]:
    """`cpu_s`: CPU seconds used, by process ("server", "client", or "bench" for in-process modes).
    `steady`: (answer times, time of the last post), seconds from the start, for the steady-state rate."""
    total_cpu = sum(cpu_s.values())
    out: dict[str, Any] = {
        "requests": len(lat) + errors, "answers": len(lat), "errors": errors, "elapsed_s": elapsed,
        "puzzles_per_s": len(lat) / elapsed, "cpu_s": cpu_s,
        "puzzles_per_cpu_s": len(lat) / total_cpu if total_cpu > 0 else float("nan"),
        "p50_s": percentile(lat, 0.5), "p95_s": percentile(lat, 0.95),
        "p99_s": percentile(lat, 0.99), "mean_latency_s": statistics.fmean(lat) if lat else float("nan"),
        "mean_steps": statistics.fmean(steps) if steps else float("nan"), "valid": sum(valid),
        "mean_occupancy": occupancy,
    }
    if steady is not None:
        # Sustained load: answers until the last puzzle was posted, while every client was still busy.
        # The drain after it (fewer and fewer clients, the slowest puzzles last) is the bench's, not the service's.
        done_at, last_post = steady
        out["steady_puzzles_per_s"] = sum(t <= last_post for t in done_at) / last_post if last_post > 0 else None
    if kinds is not None:
        per: dict[str, dict[str, float]] = {}
        for k in sorted(set(kinds)):
            idx = [i for i, kk in enumerate(kinds) if kk == k]
            per[k] = {"n": len(idx), "valid": sum(valid[i] for i in idx),
                      "mean_steps": statistics.fmean(steps[i] for i in idx)}
        out["by_kind"] = per
    if reasons is not None:
        out["halt_reasons"] = {r: reasons.count(r) for r in sorted(set(reasons))}
    return out


# ---- (d) the original procedure ------------------------------------------------------------------
def run_original(model: TRM, puzzles: list[Puzzle], slots: int, clients: int, chunk_rows: int = 0) -> dict[str, Any]:
    """Whole batches, every row halt_max_steps steps, no early exit, driven by the same closed loop.

    `clients` clients each keep one puzzle in flight; a batch takes up to `slots` of the waiting
    ones (oldest first) and answers them all when its last step is done, and those clients post
    their next puzzle at that moment. Latency = answer time - post time (queue wait + batch).
    """
    from service.engine.stepper import ChunkedStep

    steps = model.config.halt_max_steps
    step = ChunkedStep(model, chunk_rows) if chunk_rows else model.step
    todo = deque(range(len(puzzles)))
    waiting: deque[tuple[int, float]] = deque()  # (puzzle index, time posted)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(min(clients, len(puzzles))):
        waiting.append((todo.popleft(), t0))
    lat: list[float] = []
    valid: list[bool] = []
    kinds: list[str] = []
    occ: list[float] = []
    done_at: list[float] = []
    last_post = 0.0
    with torch.inference_mode():
        while waiting:
            batch = [waiting.popleft() for _ in range(min(slots, len(waiting)))]
            b = len(batch)
            inputs = torch.tensor([sudoku.encode(sudoku.parse(puzzles[i].question)) for i, _ in batch],
                                  dtype=torch.int32)
            carry = model.empty_carry(b)
            carry = model.reset_rows(carry, torch.ones(b, dtype=torch.bool), inputs,
                                     torch.zeros(b, dtype=torch.int32))
            for _ in range(steps):
                carry, out = step(carry)
            preds = out.logits.argmax(-1).to(torch.int32).tolist()
            now = time.perf_counter()
            occ += [b / slots] * steps
            for (i, posted), tokens in zip(batch, preds, strict=True):
                lat.append(now - posted)
                done_at.append(now - t0)
                valid.append(is_valid(puzzles[i], tokens))
                kinds.append(puzzles[i].kind)
                if todo:
                    waiting.append((todo.popleft(), now))
                    last_post = now - t0
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = summarize(elapsed, lat, [steps] * len(lat), valid, 0, statistics.fmean(occ), {"bench": cpu}, kinds,
                    steady=(done_at, last_post))
    res["pool_steps"] = len(occ)
    return res


# ---- (e) the engine without HTTP -----------------------------------------------------------------
def _settings(slots: int, queue_rows: int, threads: int, **extra: Any):
    from service.settings import Settings

    return Settings(models=[f"sudoku={BUNDLED}"], device="cpu", max_batch=slots, max_queue=queue_rows,
                    torch_threads=threads, request_timeout_s=600, **extra)


def run_engine(puzzles: list[Puzzle], slots: int, clients: int, threads: int, halting: str = "learned",
               **settings_extra: Any) -> dict[str, Any]:
    """The service's own registry (scheduler + runner + worker thread), fed in-process by the closed loop."""
    from service.engine.scheduler import Request, RequestStatus
    from service.registry import ModelRegistry

    registry = ModelRegistry(_settings(slots, max(clients, slots), threads, **settings_extra))
    registry.load()
    registry.start()
    served = registry.models["sudoku"]
    done: queue.Queue = queue.Queue()
    grids = [sudoku.parse(p.question) for p in puzzles]
    max_steps = served.config.halt_max_steps

    def submit(i: int) -> None:
        grid = grids[i]
        accept = (lambda tokens, g=grid: not sudoku.verify(g, sudoku.decode(tokens))) if halting == "verified" \
            else None
        served.worker.submit([Request(request_id=str(i), inputs=torch.tensor(sudoku.encode(grid), dtype=torch.int32),
                                      max_steps=max_steps, halting=halting, accept=accept,
                                      on_finish=lambda r, i=i: done.put((i, r)))])

    before = served.scheduler.stats()
    t0, c0 = time.perf_counter(), time.process_time()
    nxt = 0
    for _ in range(min(clients, len(puzzles))):
        submit(nxt)
        nxt += 1
    lat: list[float] = []
    steps: list[int] = []
    valid: list[bool] = []
    kinds: list[str] = []
    reasons: list[str] = []
    done_at: list[float] = []
    last_post = 0.0
    errors = 0
    for _ in range(len(puzzles)):
        i, r = done.get()
        done_at.append(time.perf_counter() - t0)
        if r.status != RequestStatus.FINISHED_HALTED:
            errors += 1
        else:
            lat.append(r.finished_time - r.arrival_time)
            steps.append(r.steps)
            valid.append(is_valid(puzzles[i], r.answer))
            kinds.append(puzzles[i].kind)
            reasons.append(r.halt_reason)
        if nxt < len(puzzles):
            submit(nxt)
            nxt += 1
            last_post = time.perf_counter() - t0
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = served.scheduler.stats()
    registry.drain(10)
    occ = (after.occupancy_sum - before.occupancy_sum) / max(1, after.num_steps - before.num_steps)
    res = summarize(elapsed, lat, steps, valid, errors, occ, {"bench": cpu}, kinds, reasons, (done_at, last_post))
    res["pool_steps"] = after.num_steps - before.num_steps
    return res


# ---- the server and a lean HTTP client -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m service` (= `trm serve`) on loopback with the bundled model; a context manager."""

    def __init__(self, slots: int, queue_rows: int, threads: int, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.env = {**os.environ, "TRM_MODELS": f"sudoku={BUNDLED}", "TRM_DEVICE": "cpu",
                    "TRM_MAX_BATCH": str(slots), "TRM_MAX_QUEUE": str(queue_rows), "TRM_TORCH_THREADS": str(threads),
                    "TRM_PORT": str(self.port), "TRM_HOST": "127.0.0.1", "TRM_LOG_LEVEL": "warning",
                    "TRM_REQUEST_TIMEOUT_S": "600", "TRM_MAX_CONNECTIONS": str(max(512, 4 * queue_rows)),
                    **(env or {})}
        self.log = tempfile.NamedTemporaryFile("w+", prefix="trm-bench-serve-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self._tail()}")
            try:
                status, _ = asyncio.run(_get(self.port, "/readyz"))
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after 180 s: {self._tail()}")

    def _tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-2000:]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (Linux /proc; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def metric_sums(self) -> dict[str, float]:
        """Sum and count of the per-step occupancy histogram (Prometheus text format)."""
        _, body = asyncio.run(_get(self.port, "/metrics"))
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            for name in ("trm_slot_occupancy_ratio_sum", "trm_slot_occupancy_ratio_count"):
                if line.startswith(name + "{") or line.startswith(name + " "):
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


class Connection:
    """One keep-alive HTTP/1.1 connection (requests in sequence, as one client of a closed loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _get(port: int, path: str) -> tuple[int, bytes]:
    c = Connection(port)
    try:
        return await c.request("GET", path)
    finally:
        c.close()


async def _closed_loop(port: int, puzzles: list[Puzzle], clients: int, halting: str
                       ) -> tuple[float, list[dict[str, Any] | None], list[float], tuple[list[float], float]]:
    """Every client posts its next puzzle when its last answer arrives.

    Returns elapsed, results, latencies, (answer times, last post time) from the start."""
    results: list[dict[str, Any] | None] = [None] * len(puzzles)
    lat: list[float] = [float("nan")] * len(puzzles)
    done_at: list[float] = []
    last_post = [0.0]
    it = iter(range(len(puzzles)))

    async def client() -> None:
        conn = Connection(port)
        try:
            for i in it:
                body = json.dumps({"puzzle": puzzles[i].question, "halting": halting}).encode()
                t = time.perf_counter()
                if i == len(puzzles) - 1:
                    last_post[0] = t - t0
                try:
                    status, data = await conn.request("POST", "/v1/sudoku/solve", body)
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    continue
                lat[i] = time.perf_counter() - t
                done_at.append(t + lat[i] - t0)
                if status == 200:
                    results[i] = json.loads(data)
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, results, lat, (done_at, last_post[0])


def run_http(server: Server, puzzles: list[Puzzle], clients: int, halting: str) -> dict[str, Any]:
    before = server.metric_sums()
    s0, c0 = server.cpu_s(), time.process_time()
    elapsed, results, lat, steady = asyncio.run(_closed_loop(server.port, puzzles, clients, halting))
    cpu = {"server": server.cpu_s() - s0, "client": time.process_time() - c0}
    after = server.metric_sums()
    n = "trm_slot_occupancy_ratio_count"
    s = "trm_slot_occupancy_ratio_sum"
    occ = (after.get(s, 0) - before.get(s, 0)) / max(1.0, after.get(n, 0) - before.get(n, 0))
    ok = [i for i, r in enumerate(results) if r is not None]
    res = summarize(elapsed, [lat[i] for i in ok], [results[i]["steps"] for i in ok],
                    [bool(results[i]["valid"]) for i in ok], len(puzzles) - len(ok), occ, cpu,
                    [puzzles[i].kind for i in ok], [results[i]["halt_reason"] for i in ok], steady)
    res["pool_steps"] = int(after.get(n, 0) - before.get(n, 0))
    return res


# ---- low load ------------------------------------------------------------------------------------
def run_idle(server: Server, model: TRM, puzzle: Puzzle, repeats: int) -> dict[str, Any]:
    """One easy puzzle at a time on an idle server, alternating with the raw model doing the same
    steps in this process (so that load from other jobs hits both alike); medians over `repeats`."""
    inputs = torch.tensor([sudoku.encode(sudoku.parse(puzzle.question))], dtype=torch.int32)

    def raw(steps: int) -> float:
        """reset_rows + `steps` steps + the host transfers for one row, straight on the model."""
        t = time.perf_counter()
        with torch.inference_mode():
            carry = model.empty_carry(1)
            carry = model.reset_rows(carry, torch.ones(1, dtype=torch.bool), inputs, torch.zeros(1, dtype=torch.int32))
            for _ in range(steps):
                carry, out = model.step(carry)
                out.q_halt_logits.tolist()
                out.logits.argmax(-1).tolist()
        return time.perf_counter() - t

    async def go() -> list[tuple[float, dict[str, Any], float]]:
        conn = Connection(server.port)
        out = []
        body = json.dumps({"puzzle": puzzle.question}).encode()
        try:
            for _ in range(repeats + 2):
                t = time.perf_counter()
                status, data = await conn.request("POST", "/v1/sudoku/solve", body)
                dt = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"idle request failed: {status} {data[:200]!r}")
                result = json.loads(data)
                await asyncio.sleep(0.02)  # idle between requests: the pool empties, the worker sleeps
                out.append((dt, result, raw(result["steps"])))
        finally:
            conn.close()
        return out[2:]  # the first two warm the connection and the handler

    runs = asyncio.run(go())
    med = statistics.median
    t = [r["timings"] for _, r, _ in runs]
    p50, raw_s = med(dt for dt, _, _ in runs), med(x for _, _, x in runs)
    return {"steps": runs[0][1]["steps"], "repeats": repeats, "p50_s": p50,
            "p50_queue_s": med(x["queue_s"] for x in t), "p50_compute_s": med(x["compute_s"] for x in t),
            "p50_server_total_s": med(x["total_s"] for x in t),
            "p50_handler_s": med(x["total_s"] - x["queue_s"] - x["compute_s"] for x in t),
            "p50_http_and_client_s": med(dt - r["timings"]["total_s"] for dt, r, _ in runs),
            "raw_model_s": raw_s, "p50_over_raw": p50 / raw_s}


# ---- main ----------------------------------------------------------------------------------------
def _has_setting(name: str) -> bool:
    from service.settings import Settings

    return name in Settings.model_fields


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode over several rounds: medians of the rates and latencies, the rest from round 1
    (the workload and halting are deterministic, so steps and valid answers repeat exactly)."""
    med = statistics.median
    out = dict(rounds[0])
    for key in ("puzzles_per_s", "steady_puzzles_per_s", "puzzles_per_cpu_s", "p50_s", "p95_s", "p99_s",
                "mean_latency_s", "mean_occupancy", "elapsed_s"):
        if out.get(key) is not None:
            out[key] = med(r[key] for r in rounds)
    out["errors"] = sum(r["errors"] for r in rounds)
    out["rounds"] = [{k: r.get(k) for k in ("puzzles_per_s", "steady_puzzles_per_s", "puzzles_per_cpu_s", "p99_s",
                                            "valid", "cpu_s")}
                     for r in rounds]
    return out


def targets(r: dict[str, Any], per_round: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The targets of docs/benchmarks.md as ratios of steady-state puzzles/s (round medians), each with whether it
    holds; beside it the same ratio per round (each round runs every mode once, close together), of
    whole-run puzzles/s (drain included) and of puzzles per CPU-second."""
    out: dict[str, Any] = {}
    key = "steady_puzzles_per_s"

    def ratio(x: str, y: str, k: str = key) -> float:
        return r[x][k] / r[y][k]

    def spread(x: str, y: str) -> list[float]:
        return [a[key] / b[key] for a, b in zip(per_round[x], per_round[y], strict=True)]

    def put(name: str, x: str, y: str, ok: bool) -> None:
        out[name] = {"ratio": ratio(x, y), "per_round": spread(x, y), "whole_run": ratio(x, y, "puzzles_per_s"),
                     "per_cpu_s": ratio(x, y, "puzzles_per_cpu_s"), "met": ok}

    if "d8" in r and "d" in r:
        put("d8_over_d", "d8", "d", True)  # not a target: how much of the rest is the runner's chunking
    if "a" in r and "d" in r:
        put("a_over_d", "a", "d", ratio("a", "d") >= 3 and r["a"]["p99_s"] <= r["d"]["p99_s"])
    for b in ("b", "bs"):
        if b in r and "d" in r:
            put(f"{b}_over_d", b, "d", ratio(b, "d") >= 2 and r[b]["valid"] >= r["d"]["valid"]
                and r[b]["p99_s"] <= r["d"]["p99_s"])
    if "a" in r and "c" in r:
        put("a_over_c", "a", "c", ratio("a", "c") >= 2 and r["a"]["p99_s"] < r["c"]["p99_s"])
    if "a" in r and "e" in r:
        put("a_over_e", "a", "e", ratio("a", "e") >= 0.85)
    if "idle" in r:
        out["idle_p50_over_raw"] = {"ratio": r["idle"]["p50_over_raw"], "met": r["idle"]["p50_over_raw"] <= 2}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="192 requests, 32 clients, 16 slots, 1 round, 10 idle repeats")
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--clients", type=int, default=None, help="concurrent clients (default 2 x slots)")
    p.add_argument("--slots", type=int, default=None, help="TRM_MAX_BATCH, and the batch of (d)")
    p.add_argument("--rounds", type=int, default=None, help="run every mode this many times, round-robin")
    p.add_argument("--mix", default="mixed", choices=sorted(MIXES))
    p.add_argument("--modes", default="d,d8,e,a,b,bs,c,idle")
    p.add_argument("--stall-steps", type=int, default=2, help="TRM_STALL_STEPS for mode bs")
    p.add_argument("--idle-repeats", type=int, default=None)
    p.add_argument("--server-env", action="append", default=[], help="extra KEY=VALUE for every server")
    p.add_argument("--threads", type=int, default=1, help="torch threads (bench process and servers)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    slots = args.slots or (16 if args.quick else 64)
    clients = args.clients or 2 * slots
    n = args.requests or (192 if args.quick else 512)
    rounds = args.rounds or (1 if args.quick else 2)
    idle_repeats = args.idle_repeats or (10 if args.quick else 30)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "bs" in modes and not _has_setting("stall_steps"):
        log("mode bs skipped: this build has no TRM_STALL_STEPS setting")
        modes.remove("bs")
    torch.set_num_threads(args.threads)
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)

    puzzles = build_workload(n, MIXES[args.mix], args.seed)
    model, _ = load_checkpoint(BUNDLED, device="cpu")
    model.eval()
    from service.settings import Settings

    chunk_rows = int(extra_env.get("TRM_CPU_CHUNK_ROWS", Settings.model_fields["cpu_chunk_rows"].default))
    t_start = time.perf_counter()
    server_env = {"a": {}, "b": {}, "idle": {}, "bs": {"TRM_STALL_STEPS": str(args.stall_steps)},
                  "c": {"TRM_BATCHING": "request"}}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}  # one server per distinct environment, started up front
        for mode in modes:
            if mode in server_env:
                env = {**extra_env, **server_env[mode]}
                key = json.dumps(env, sort_keys=True)
                if key not in servers:
                    servers[key] = stack.enter_context(Server(slots, max(clients, slots), args.threads, env))
                servers[mode] = servers[key]
        per_round: dict[str, list[dict[str, Any]]] = {m: [] for m in modes if m != "idle"}
        for i in range(rounds):
            for mode in per_round:
                if mode in ("d", "d8"):
                    res = run_original(model, puzzles, slots, clients, chunk_rows=chunk_rows if mode == "d8" else 0)
                elif mode == "e":
                    res = run_engine(puzzles, slots, clients, args.threads)
                else:
                    res = run_http(servers[mode], puzzles, clients, "verified" if mode in ("b", "bs") else "learned")
                per_round[mode].append(res)
                log(f"round {i + 1} {mode}: {res['steady_puzzles_per_s']:.1f} puzzles/s steady, "
                    f"{res['puzzles_per_s']:.1f} whole run ({res['puzzles_per_cpu_s']:.1f} per CPU-s), "
                    f"p50 {res['p50_s']:.3f}s, p99 {res['p99_s']:.3f}s, steps {res['mean_steps']:.2f}, "
                    f"valid {res['valid']}/{res['answers']}, errors {res['errors']}, "
                    f"occupancy {res['mean_occupancy']:.2f}")
        results: dict[str, Any] = {m: combine(rs) for m, rs in per_round.items()}
        if "idle" in modes:
            easy = build_workload(1, MIXES["easy"], args.seed + 1)[0]
            results["idle"] = run_idle(servers["idle"], model, easy, idle_repeats)
            log(f"idle: {results['idle']}")

    print(json.dumps({
        "bench": "serve", "device": "cpu", "threads": args.threads, "torch": torch.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "model": str(BUNDLED.relative_to(ROOT)), "halt_max_steps": model.config.halt_max_steps,
        "requests": n, "clients": clients, "slots": slots, "rounds": rounds,
        "mix": {"name": args.mix, "parts": MIXES[args.mix]}, "seed": args.seed, "stall_steps": args.stall_steps,
        "cpu_chunk_rows": chunk_rows,
        "max_wait_s": float(extra_env.get("TRM_MAX_WAIT_S", Settings.model_fields["max_wait_s"].default)),
        "server_env": extra_env, "elapsed_s": time.perf_counter() - t_start, "results": results,
        "targets": targets(results, per_round),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
