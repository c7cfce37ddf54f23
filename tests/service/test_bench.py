"""bench/bench_batching.py still runs (a tiny workload; the numbers themselves are the script's job)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_batching.py"


def test_bench_batching_prints_one_json_line(capsys):
    spec = importlib.util.spec_from_file_location("bench_batching", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--synthetic", "--num-requests", "12", "--slots", "4", "--steps", "1,3", "--threads", "1",
                       "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for mode in ("continuous", "request"):
        r = out[mode]
        assert r["throughput_rps"] > 0 and 0 < r["p50_s"] <= r["p99_s"] and 0 < r["mean_occupancy"] <= 1
    # Same work in both modes: 12 rows of 1 or 3 steps; continuous never needs more pool steps.
    assert out["continuous"]["num_steps"] <= out["request"]["num_steps"]
    assert out["throughput_ratio"] > 0 and out["device"] == "cpu"
