"""The model's own commands, `trm info` and `trm convert-original` (the `trm` entry point, trm_cli, runs them).

`info_main(argv)` and `convert_original_main(argv)` take the arguments after the subcommand;
`main(argv)` takes the subcommand first. Only torch, safetensors and the standard library are
imported here (PyYAML only when converting).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointFormatError, load_checkpoint
from .config import PRESETS, TRMConfig
from .model import TRM


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings such as pos_encodings=rope


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not key=value (e.g. H_cycles=3)")
        out[key.removeprefix("arch.")] = _parse_value(value)
    return out


def convert_original(args: argparse.Namespace) -> int:
    import yaml  # only this command reads the original's YAML

    from .original import convert_original_file, find_run_config

    config_path = Path(args.config) if args.config else find_run_config(args.checkpoint)
    with open(config_path) as f:
        run_config = yaml.safe_load(f)
    if not isinstance(run_config, dict) or not isinstance(run_config.get("arch"), dict):
        raise ValueError(f"{config_path} has no `arch:` section; pass the all_config.yaml the original run wrote")
    arch = dict(run_config["arch"])
    extra: dict[str, Any] = {}
    dataset_json = args.dataset_json or (Path(args.dataset) / "train" / "dataset.json" if args.dataset else None)
    if dataset_json:
        with open(dataset_json) as f:
            data = json.load(f)
        arch.update({k: data[k] for k in ("seq_len", "vocab_size", "num_puzzle_identifiers", "task", "grid_height",
                                          "grid_width") if k in data})
    if args.dataset and (Path(args.dataset) / "arc_tasks.json").is_file():
        # the ARC versions table: the service recognises a posted task by it and runs its rows
        extra["arc_tasks"] = json.loads((Path(args.dataset) / "arc_tasks.json").read_text())
        arch.setdefault("task", "arc")
        arch.setdefault("grid_height", 30)
        arch.setdefault("grid_width", 30)
    arch.update(parse_overrides(args.overrides))
    config = convert_original_file(args.checkpoint, args.output, arch, metadata={
        **extra,
        "train": {"source": "original TinyRecursiveModels checkpoint", "checkpoint": Path(args.checkpoint).name,
                  "run": {k: run_config.get(k) for k in ("project_name", "run_name", "data_paths", "lr", "ema")}},
    })
    model = TRM(config.replace(num_puzzle_identifiers=1))
    print(f"wrote {args.output}: {model.num_trainable_params():,} trainable parameters, "
          f"puzzle table {config.num_puzzle_identifiers:,} x {config.puzzle_emb_ndim}")
    return 0


def info(args: argparse.Namespace) -> int:
    if args.preset:
        model, meta, size = TRM(TRMConfig.preset(args.preset)), {}, None
    elif args.model:
        model, meta = load_checkpoint(args.model)
        size = Path(args.model).stat().st_size
    else:
        raise ValueError("give a MODEL file or --preset NAME")
    report = {
        "config": model.config.to_dict(),
        "trainable_params": model.num_trainable_params(),
        "puzzle_table_params": model.num_puzzle_table_params(),
        "puzzle_table_rows": model.config.num_puzzle_identifiers,
    }
    if size is not None:
        report["file_bytes"] = size
        report["train"] = meta.get("train", {})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    name = args.preset or args.model
    print(f"{name}\n  trainable parameters: {report['trainable_params']:,}")
    print(f"  puzzle table: {report['puzzle_table_params']:,} floats "
          f"({report['puzzle_table_rows']:,} rows, not trainable by autograd)")
    if size is not None:
        print(f"  file size: {size:,} bytes")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in report["config"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trm", description="the model's own commands")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print a model's config and parameter counts")
    p.add_argument("model", nargs="?", help="a trm-serve .safetensors file")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a paper configuration instead of a file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=info)
    p = sub.add_parser("convert-original", help="convert an original TRM checkpoint to safetensors")
    p.add_argument("checkpoint", help="the original run's checkpoint file (e.g. step_518071)")
    p.add_argument("--config", help="the all_config.yaml the original run wrote (default: the one beside the file)")
    p.add_argument("--dataset", help="the dataset folder the run trained on (train/dataset.json; for ARC also "
                   "arc_tasks.json from `trm build-data arc`, so the service recognises its tasks)")
    p.add_argument("--dataset-json", help="the dataset's train/dataset.json (seq_len, vocab_size, puzzle ids)")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("overrides", nargs="*", help="arch fields as key=value, e.g. H_cycles=3 task=sudoku")
    p.set_defaults(func=convert_original)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    # key=value overrides may come before or after options; argparse alone would refuse the latter
    args, extra = parser.parse_known_args(argv)
    if extra and not (args.command == "convert-original" and all("=" in e and not e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except (CheckpointFormatError, FileNotFoundError, ValueError) as e:
        print(f"trm {args.command}: error: {e}", file=sys.stderr)
        return 2


def info_main(argv: list[str]) -> int:
    """`trm info ...`"""
    return main(["info", *argv])


def convert_original_main(argv: list[str]) -> int:
    """`trm convert-original ...`"""
    return main(["convert-original", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
