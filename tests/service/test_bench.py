"""The benchmarks still run, scaled down, and the orderings they exist to show hold.

Only orderings that follow from the design are asserted (work done, answers found, slot use,
where the time of a request goes), never timings: throughput ratios are the scripts' output,
measured in one run, not a test's.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_batching_prints_one_json_line(capsys):
    bench = _load("bench_batching")
    assert bench.main(["--synthetic", "--num-requests", "12", "--slots", "4", "--steps", "1,3", "--threads", "1",
                       "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for mode in ("continuous", "request"):
        r = out[mode]
        assert 0 < r["p50_s"] <= r["p99_s"] and 0 < r["mean_occupancy"] <= 1
    # Same work in both modes: 12 rows of 1 or 3 steps; continuous never needs more pool steps.
    assert out["continuous"]["num_steps"] <= out["request"]["num_steps"]


@pytest.fixture(scope="module")
def serve_bench():
    return _load("serve")


def test_workload_is_the_stated_mix_of_real_puzzles(serve_bench, shared):
    puzzles = serve_bench.build_workload(48, serve_bench.MIXES["mixed"], seed=0)
    assert len(puzzles) == 48 and len({p.question for p in puzzles}) == 48
    kinds = [p.kind for p in puzzles]
    assert kinds.count("reveal30") == 12 and kinds.count("hard") == 4
    for p in puzzles:  # a revealed puzzle is still the same real puzzle: its solution agrees with its givens
        assert len(p.question) == 81 and all(q in ".0" or q == a for q, a in zip(p.question, p.answer, strict=True))
    blanks = {k: sum(p.question.count(".") for p in puzzles if p.kind == k) for k in ("reveal10", "reveal50")}
    assert blanks["reveal50"] < blanks["reveal10"]
    assert serve_bench.build_workload(48, serve_bench.MIXES["mixed"], seed=0) == puzzles  # seeded


def test_serve_bench_orderings(serve_bench, shared):
    """(d) the original procedure, (e) the engine, and the same over HTTP, on 24 mixed puzzles, 4 slots."""
    import torch

    from trm_core import load_checkpoint

    puzzles = serve_bench.build_workload(24, serve_bench.MIXES["mixed"], seed=0)
    model, _ = load_checkpoint(serve_bench.BUNDLED, device="cpu")
    max_steps = model.config.halt_max_steps
    d = serve_bench.run_original(model.eval(), puzzles, slots=4, clients=8)
    e = serve_bench.run_engine(puzzles, 4, 8, 1)
    v = serve_bench.run_engine(puzzles, 4, 8, 1, halting="verified")
    c = serve_bench.run_engine(puzzles, 4, 8, 1, batching="request")
    assert torch.get_num_threads() == 1
    for r in (d, e, v, c):
        assert r["answers"] == 24 and r["errors"] == 0

    # The original runs every row to the budget, in whole batches of 4: 6 batches x 8 steps.
    assert d["mean_steps"] == max_steps and d["pool_steps"] == 6 * max_steps and d["mean_occupancy"] == 1
    # Learned halting stops early on the easier three quarters, so continuous batching needs fewer pool steps.
    assert e["mean_steps"] < 0.75 * max_steps
    assert e["pool_steps"] < d["pool_steps"]
    # Verified halting stops at the first valid answer: never fewer valid answers than the full budget.
    assert v["valid"] >= d["valid"] and v["mean_steps"] < max_steps
    assert v["halt_reasons"].get("verified", 0) == v["valid"]
    # Request-level batching: same rows, same halting, but a batch waits for its slowest row.
    assert abs(c["valid"] - e["valid"]) <= 1
    assert c["mean_occupancy"] < e["mean_occupancy"] and c["pool_steps"] > e["pool_steps"]

    with serve_bench.Server(slots=4, queue_rows=8, threads=1) as server:
        a = serve_bench.run_http(server, puzzles, 8, "learned")
        idle = serve_bench.run_idle(server, model, serve_bench.build_workload(1, serve_bench.MIXES["easy"], 1)[0], 3)
    assert a["answers"] == 24 and a["errors"] == 0
    assert abs(a["valid"] - e["valid"]) <= 1 and a["pool_steps"] < d["pool_steps"]
    assert 0 < a["mean_occupancy"] <= 1
    # Where an idle request's time goes: every part is inside the one around it.
    assert idle["steps"] >= 1 and idle["raw_model_s"] > 0
    assert idle["p50_s"] >= idle["p50_server_total_s"] >= idle["p50_compute_s"] > 0
    assert idle["p50_queue_s"] >= 0 and idle["p50_http_and_client_s"] >= 0

    out = serve_bench.targets({"a": a, "c": c, "d": d, "e": e, "idle": idle},
                              {"a": [a], "c": [c], "d": [d], "e": [e]})
    assert set(out) == {"a_over_d", "a_over_c", "a_over_e", "idle_p50_over_raw"}
    assert all(isinstance(t["met"], bool) for t in out.values())


@pytest.mark.parametrize("mlp_t", [True, False])
def test_model_bench_baseline_replays_the_counted_flops(mlp_t):
    """bench/model.py's matmul baseline issues exactly the FLOPs torch's counter finds in one network
    application (plus attention, which the counter misses on CPU), and its kernel count is structural."""
    import torch

    from tests.conftest import tiny_model

    bm = _load("model")
    model = tiny_model(mlp_t=mlp_t, pos_encodings="none" if mlp_t else "rope")
    cfg = model.config
    z = torch.randn(3, cfg.total_len, cfg.hidden_size)
    with torch.inference_mode():
        counted, saw_attention = bm.count_flops(lambda: model._net(z, z))
        rec = bm.MatmulRecorder()
        with rec:
            model._net(z, z)
    _, replay_flops = bm.matmul_replay(rec.ops, z.dtype)
    assert replay_flops == counted + (0 if saw_attention else rec.attention_flops)
    assert (rec.attention_flops > 0) == (not mlp_t)
    k = bm.count_kernels(cfg)
    apps = bm.applications_per_step(cfg)
    assert apps * k["kernels_per_application"] < k["kernels_per_step"] < apps * k["kernels_per_application"] + 20
    est = bm.gpu_estimate(10**9, k["kernels_per_step"], [1, 10**6], **bm.GPU_ASSUMPTIONS)["points"]
    assert est[0]["graph_speedup"] > 1 and not est[0]["compute_bound"]  # launch-bound at one row
    assert est[1]["compute_bound"] and abs(est[1]["graph_speedup"] - 1) < 1e-9


@pytest.mark.parametrize("mlp_t", [True, False])
def test_row_step_flops_on_the_meta_device_equal_the_cpu_count(mlp_t):
    """bench/gpu_check.py counts a preset's FLOPs on the meta device (no compute): the same count as on CPU."""
    import copy

    from tests.conftest import tiny_model

    bm = _load("model")
    model = tiny_model(mlp_t=mlp_t, pos_encodings="none" if mlp_t else "rope")
    on_cpu = bm.row_step_flops(model)
    assert on_cpu[0] > 0 and (on_cpu[2] > 0) == (not mlp_t)
    on_meta = bm.row_step_flops(copy.deepcopy(model).to("meta"))
    assert on_meta[:2] == on_cpu[:2]  # step and application: the same count, attention added once either way


def test_gpu_check_quick_on_cpu_prints_the_three_sections():
    """`bench/gpu_check.py --device cpu --quick` (what CI runs): one JSON object with parity, throughput
    and http. On a CPU the serving model is the float32 model itself and buckets pad eagerly, so every
    parity comparison must be equal row for row."""
    import subprocess

    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["device"]["device"] == "cpu" and out["quick"] is True

    parity = out["parity"]
    assert "error" not in parity, parity
    n = parity["puzzles"]
    assert n == 24 and parity["cuda_graphs"] is None and parity["serving_dtype"] == "float32"
    for key in ("graphs_vs_eager", "eager_vs_cpu_fp32", "graphs_vs_cpu_fp32"):
        assert parity[key]["equal"] == n and parity[key]["differing"] == 0 and parity[key]["rows"] == []
    assert set(parity["solved"]) == {"cpu_fp32", "eager", "graphs"}

    throughput = out["throughput"]
    assert "error" not in throughput, throughput
    names = [k for k in throughput if k != "seconds"]
    assert names[0] == "bundled-sudoku" and any(k.startswith("sudoku-mlp") for k in names)
    assert any(k.startswith("arc-att") for k in names)
    for name in names:
        sub = throughput[name]
        assert sub["flops_per_row_step"] > 0 and sub["cuda_graphs"] is None
        measured = [p for p in sub["points"] if "eager_row_steps_s" in p]
        assert measured and measured[0]["rows"] == 1 and max(p["rows"] for p in sub["points"]) <= 64
        for p in measured:
            assert p["eager_row_steps_s"] > 0 and p["gflops_s"] > 0 and p["peak_fraction"] is None

    http = out["http"]
    assert "error" not in http, http
    for slots in ("4", "16"):
        h = http[slots]
        assert h["errors"] == 0 and h["puzzles"] == 2 * int(slots) and h["device"] == "cpu"
        assert h["puzzles_per_s"] > 0 and 0 < h["p50_s"] <= h["p99_s"]
        assert h["cuda_graphs"] is None and h["device_fallback_cpu"] == 0.0


def test_gpu_check_peak_table_matches_device_names():
    bench = _load("gpu_check")
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("NVIDIA L4") == 121.0
    assert bench.peak_tflops("NVIDIA L40S") is None  # not the L4
    assert bench.peak_tflops("NVIDIA A10") == 125.0
    assert bench.peak_tflops("NVIDIA A10G") is None  # no published bf16 figure: --peak-tflops
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert bench.peak_tflops("Tesla T4") == 8.1
    assert bench.peak_tflops("Some Future GPU") is None


def test_train_compute_counts_the_figures_the_sudoku_card_quotes(shared):
    """The card's compute paragraph (24.8 GFLOP a bundled step, 7,364x for the paper run) rests on two
    facts this checks: a step's matmul FLOPs are linear in the batch (the bench counts at a small batch
    and scales), and the counts for the bundled config and the paper's sudoku-mlp are the quoted ones."""
    bench = _load("train_compute")
    from training.config import TrainConfig, load_config
    from trm_core.checkpoint import read_metadata

    data = str(shared / "data" / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv")
    meta = read_metadata(bench.BUNDLED)
    bundled = TrainConfig.model_validate(meta["train_config"])
    at4, params = bench.flops_per_step(bundled, 4, data)
    at8, _ = bench.flops_per_step(bundled, 8, data)
    assert at4 == pytest.approx(at8, rel=1e-9)  # both already scaled to the config's batch of 64
    assert params == 225_794
    assert at8 == pytest.approx(24.8e9, rel=0.005)

    paper = load_config("sudoku-mlp")
    paper_flops, paper_params = bench.flops_per_step(paper, 1, data)
    assert paper_params == 5_028_866
    paper_steps = bench.paper_steps(paper)
    assert paper_steps == 65_104
    ratio = paper_flops * paper_steps / (at8 * int(meta["train"]["steps"]))
    assert ratio == pytest.approx(7_364, rel=0.001)
