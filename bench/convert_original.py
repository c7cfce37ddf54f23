"""`trm convert-original` on a paper-size ARC checkpoint: wall time and peak memory, then loading it.

The public ARC checkpoints (`arc_v1_public/step_518071`, `arc_v2_public/step_723914`) are raw
`torch.save`d state dicts of the original code, ~1.8 and ~2.5 GB, almost all of it the puzzle
table (float32 [num_puzzle_identifiers, 512]). This bench writes a synthetic one in that layout
(the `arc_v1_public` architecture: hidden 512, 8 heads, 2 layers, H_cycles 3, L_cycles 4,
puzzle_emb_ndim 512 x puzzle_emb_len 16, rope, keys `_orig_mod.model.inner.*`, bfloat16
H_init/L_init; random weights) into `--workdir` (never the repository), converts it with the
command exactly as a user runs it, and loads the result with `trm_core.load_checkpoint`. Each
step runs in its own process, which reports its own peak RSS (`ru_maxrss`), so steps do not
inherit each other's peaks; `baseline` is a process that only imports torch and trm_core.

    python bench/convert_original.py --workdir /tmp/trm-bench                   # 1.8 GB and 2.5 GB tables
    python bench/convert_original.py --workdir /tmp/trm-bench --rows 878907     # one size
    python bench/convert_original.py --workdir DIR --arc-tasks DATA/arc_tasks.json  # serveable result

`--arc-tasks` puts a real `arc_tasks.json` (from `trm build-data arc`; its ids must fit the
table) beside the synthetic dataset.json, so the converted checkpoint can be served and asked ARC
tasks (bench/serve_arc_table.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCH = {  # the original's config/arch/trm.yaml with the ARC runs' overrides (L_cycles=4)
    "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    "halt_exploration_prob": 0.1, "halt_max_steps": 16, "H_cycles": 3, "L_cycles": 4, "H_layers": 0,
    "L_layers": 2, "hidden_size": 512, "num_heads": 8, "expansion": 4, "puzzle_emb_ndim": 512,
    "pos_encodings": "rope", "forward_dtype": "bfloat16", "mlp_t": False, "puzzle_emb_len": 16,
    "no_ACT_continue": True,
}
SIZES = {878_907: "~1.8 GB (arc_v1_public)", 1_220_703: "~2.5 GB (arc_v2_public)"}
_TO_ORIGINAL = [  # our key -> the original's, after the `_orig_mod.model.inner.` prefix
    ("embed_tokens.weight", "embed_tokens.embedding_weight"),
    (".attn.qkv.", ".self_attn.qkv_proj."), (".attn.o.", ".self_attn.o_proj."),
    (".mlp.gate_up.", ".mlp.gate_up_proj."), (".mlp.down.", ".mlp.down_proj."),
]


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _original_name(key: str) -> str:
    for ours, theirs in _TO_ORIGINAL:
        key = key.replace(ours, theirs)
    if key.startswith("layers."):
        key = "L_level." + key
    return "_orig_mod.model.inner." + key


def make(run: Path, data: Path, rows: int, arc_tasks: Path | None) -> dict:
    """The synthetic original run folder (step_518071 + all_config.yaml) and its dataset folder."""
    import torch
    import yaml

    from trm_core import TRM, TRMConfig

    cfg = TRMConfig.preset("arc-att")
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in TRM(cfg).state_dict().items():
        w = torch.randn(v.shape, generator=g) * 0.02
        state[_original_name(k)] = w.bfloat16() if k in ("H_init", "L_init") else w
    table = torch.empty(rows, cfg.puzzle_emb_ndim)
    for lo in range(0, rows, 100_000):  # fill in chunks: randn of the whole table would need a second copy
        table[lo:lo + 100_000].normal_(0, 0.02, generator=g)
    state["_orig_mod.model.inner.puzzle_emb.weights"] = table
    run.mkdir(parents=True, exist_ok=True)
    torch.save(state, run / "step_518071")
    (run / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH, "data_paths": ["data/arc1concept-aug-1000"],
                                                         "ema": True, "lr": 1e-4, "run_name": "synthetic"}))
    (data / "train").mkdir(parents=True, exist_ok=True)
    (data / "train" / "dataset.json").write_text(json.dumps({
        "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 12, "seq_len": 900,
        "num_puzzle_identifiers": rows, "total_groups": 0, "mean_puzzle_examples": 0.0, "total_puzzles": 0,
        "sets": ["all"]}))
    if arc_tasks is not None:
        shutil.copy(arc_tasks, data / "arc_tasks.json")
    return {"file_bytes": (run / "step_518071").stat().st_size}


def convert(run: Path, data: Path, out: Path) -> dict:
    from trm_core.cli import main

    t0 = time.perf_counter()
    code = main(["convert-original", str(run / "step_518071"), "--dataset", str(data), "-o", str(out)])
    return {"exit_code": code, "seconds": round(time.perf_counter() - t0, 2)}


def load(out: Path) -> dict:
    from trm_core import load_checkpoint

    t0 = time.perf_counter()
    model, meta = load_checkpoint(out)
    return {"seconds": round(time.perf_counter() - t0, 2), "rss_after_bytes": _rss_now(),
            "table_rows": model.config.num_puzzle_identifiers, "arc_tasks": len(meta.get("arc_tasks") or {})}


def baseline() -> dict:
    import torch  # noqa: F401

    import trm_core  # noqa: F401
    return {}


def _child(step: str, *args: str) -> dict:
    """Run one step in a fresh process; it prints its result and its own peak RSS as JSON."""
    proc = subprocess.run([sys.executable, __file__, "--child", step, *args], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, help="where the multi-GB files go (not the repository); required")
    p.add_argument("--rows", type=int, nargs="+", default=list(SIZES), help="puzzle table rows (x 512 floats)")
    p.add_argument("--arc-tasks", type=Path, default=None, help="an arc_tasks.json to include (ids < rows)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic original file after converting")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        step, rest = args.child[0], [Path(a) if a not in ("-",) else None for a in args.child[1:]]
        if step == "make":
            result = make(rest[0], rest[1], int(args.child[3]), rest[3])
        elif step == "convert":
            result = convert(*rest[:3])
        elif step == "load":
            result = load(rest[0])
        else:
            result = baseline()
        print(json.dumps({**result, "peak_rss_bytes": _peak()}))
        return
    if args.workdir is None:
        p.error("--workdir is required")
    if REPO in args.workdir.resolve().parents or args.workdir.resolve() == REPO:
        raise SystemExit("--workdir must be outside the repository (the files are gigabytes)")
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg": os.getloadavg()}, "baseline": _child("baseline"), "sizes": []}
    for rows in args.rows:
        d = args.workdir / f"rows{rows}"
        run, data, out = d / "run", d / "data", d / "arc.safetensors"
        made = _child("make", str(run), str(data), str(rows), str(args.arc_tasks) if args.arc_tasks else "-")
        table = rows * 512 * 4
        conv = _child("convert", str(run), str(data), str(out))
        loaded = _child("load", str(out))
        file_bytes = made["file_bytes"]
        report["sizes"].append({
            "rows": rows, "label": SIZES.get(rows, ""), "table_bytes": table, "original_file_bytes": file_bytes,
            "converted_file_bytes": out.stat().st_size,
            "convert": {**conv, "peak_over_file": round(conv["peak_rss_bytes"] / file_bytes, 3)},
            "load": {**loaded, "peak_over_file": round(loaded["peak_rss_bytes"] / file_bytes, 3)},
        })
        if not args.keep:
            (run / "step_518071").unlink()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
