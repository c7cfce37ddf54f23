"""HTTP side of the deployment smoke: requests, the mixed load, requests in flight across `docker stop`.

Standard library only (urllib + threads), every request to 127.0.0.1, every loop bounded in count
and time.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# The README's examples: a hard Sudoku the bundled model solves as posted, a Maze it solves (8x8).
SUDOKU = "98.7.....6...8.7....7..5...4...3..2..1......4..85..9....69..5......5...1.....2.3."
SUDOKU_VIEWS = "1....67...571....6..9....1...5..83..7..5...9..3...........4...25..6...7...4..28.."
MAZE = ["    ## #", "S # # # ", "  #  ###", " # #    ", "#   #  #", "  #     ", " # #    ", "  G#    "]
# ARC tasks small enough for the tiny ARC model the smoke makes (grids fit its 10x10 canvas): the first
# is in its puzzle table (solved at once), the second is new (an adaptation job trains rows for it).
ARC_TASK_KNOWN = {"train": [{"input": [[1, 1], [0, 0]], "output": [[0, 0], [1, 1]]}],
                  "test": [{"input": [[2, 2], [0, 0]], "output": [[0, 0], [2, 2]]}]}
ARC_TASK = {"train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
                      {"input": [[0, 0], [2, 0]], "output": [[0, 0], [0, 2]]}],
            "test": [{"input": [[3, 0], [0, 0]], "output": [[0, 3], [0, 0]]}]}


@dataclass
class Reply:
    status: int | None  # None: no HTTP answer (connection refused, reset or closed)
    content_type: str = ""
    body: dict | list | None = None
    error: str = ""


def call(base: str, method: str, path: str, body: object | None = None, timeout_s: float = 60.0) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Reply(resp.status, resp.headers.get("content-type", ""), _json(resp.read()))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers.get("content-type", ""), _json(e.read()))
    except (OSError, urllib.error.URLError) as e:
        return Reply(None, error=f"{type(e).__name__}: {e}")


def _json(raw: bytes) -> dict | list | None:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def get_text(url: str, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read().decode()


def wait_until(predicate, timeout_s: float, every_s: float = 0.25) -> float | None:
    """Seconds until predicate() was true, None when it never was within timeout_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if predicate():
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(every_s)
    return None


def expect(reply: Reply, status: int, what: str) -> dict:
    if reply.status != status:
        raise AssertionError(f"{what}: expected {status}, got {reply.status} {reply.error} {reply.body}")
    return reply.body if isinstance(reply.body, dict) else {}


def solve_checks(base: str) -> dict:
    """The README's Sudoku and Maze, answered and valid; a bad cell is a problem+json 422."""
    sudoku = expect(call(base, "POST", "/v1/sudoku/solve", {"puzzle": SUDOKU}), 200, "sudoku solve")
    maze = expect(call(base, "POST", "/v1/maze/solve", {"puzzle": MAZE}), 200, "maze solve")
    if not (sudoku.get("valid") and maze.get("valid")):
        raise AssertionError(f"README puzzles not solved: sudoku {sudoku.get('valid')}, maze {maze.get('valid')}")
    bad = call(base, "POST", "/v1/sudoku/solve", {"puzzle": "x" * 81})
    if bad.status != 422 or bad.content_type != "application/problem+json":
        raise AssertionError(f"bad puzzle: {bad.status} {bad.content_type}")
    return {"sudoku_steps": sudoku["steps"], "maze_steps": maze["steps"]}


def mixed_load(base: str, rounds: int = 3) -> dict[str, int]:
    """Sudoku and Maze under every halting mode, with views, ARC solves, an ARC adaptation job, 422s.

    Returns the count of replies per status. Bounded: `rounds` rounds of a fixed list of requests.
    """
    bodies: list[tuple[str, dict]] = []
    for halting in ("learned", "verified", "fixed"):
        bodies += [("/v1/sudoku/solve", {"puzzle": SUDOKU, "halting": halting, "max_steps": 8}),
                   ("/v1/sudoku/solve", {"puzzle": SUDOKU_VIEWS, "halting": halting, "views": 4, "max_steps": 8}),
                   ("/v1/maze/solve", {"puzzle": MAZE, "halting": halting}),
                   ("/v1/maze/solve", {"puzzle": MAZE, "halting": halting, "views": 8})]
        if halting != "verified":  # ARC has no rule check: verified halting is a 422 there
            bodies.append(("/v1/arc/solve", {"task": ARC_TASK_KNOWN, "halting": halting, "max_steps": 4}))
    bodies += [("/v1/sudoku/solve", {"puzzle": "1" * 80}), ("/v1/maze/solve", {"puzzle": ["S G"]})]  # 422s
    counts: dict[str, int] = {}
    job = expect(call(base, "POST", "/v1/arc/tasks", {"task": ARC_TASK}), 202, "ARC adaptation job")
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            for reply in pool.map(lambda pb: call(base, "POST", *pb), bodies):
                counts[str(reply.status)] = counts.get(str(reply.status), 0) + 1
    state = {}

    def job_done() -> bool:
        state.update(call(base, "GET", f"/v1/arc/tasks/{job['id']}").body or {})
        return state.get("state") in ("succeeded", "failed", "cancelled")

    if wait_until(job_done, 120.0, 0.5) is None or state["state"] != "succeeded":
        raise AssertionError(f"ARC adaptation job did not succeed: {state}")
    return counts


@dataclass
class InFlight:
    """Requests sent before `docker stop`, and what became of each."""

    replies: list[Reply] = field(default_factory=list)

    @property
    def answered(self) -> int:  # 200, or 503 problem+json (aborted by the drain): both are answers
        return sum(r.status == 200 or (r.status == 503 and r.content_type == "application/problem+json")
                   for r in self.replies)

    @property
    def refused(self) -> int:  # 429 problem+json: never accepted (admission saw its deadline could not be met)
        return sum(r.status == 429 and r.content_type == "application/problem+json" for r in self.replies)

    @property
    def lost(self) -> int:  # no answer, or one that is neither of the above (a 500, a bare 503)
        return len(self.replies) - self.answered - self.refused


def long_request(i: int) -> tuple[str, dict]:
    """A request whose rows step for a while on a CPU (the whole budget, two views), yet small enough
    that admission takes it (a request whose deadline cannot be met is refused with 429 up front)."""
    if i % 4 == 3:
        return "/v1/maze/solve", {"puzzle": MAZE, "halting": "fixed", "max_steps": 64, "views": 2}
    return "/v1/sudoku/solve", {"puzzle": SUDOKU_VIEWS, "halting": "fixed", "max_steps": 32, "views": 2}


def send_in_flight(base: str, n: int, pool: ThreadPoolExecutor) -> list:
    return [pool.submit(call, base, "POST", *long_request(i), 60.0) for i in range(n)]

