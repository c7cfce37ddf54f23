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

from .checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
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

    from .original import import_original, load_original_file

    with open(args.config) as f:
        run_config = yaml.safe_load(f)
    if not isinstance(run_config, dict) or not isinstance(run_config.get("arch"), dict):
        raise ValueError(f"{args.config} has no `arch:` section; pass the all_config.yaml the original run wrote")
    arch = dict(run_config["arch"])
    if args.dataset_json:
        with open(args.dataset_json) as f:
            data = json.load(f)
        arch.update({k: data[k] for k in ("seq_len", "vocab_size", "num_puzzle_identifiers") if k in data})
    arch.update(parse_overrides(args.overrides))
    model = import_original(load_original_file(args.checkpoint), arch)
    save_checkpoint(model, args.output, metadata={
        "train": {"source": "original TinyRecursiveModels checkpoint", "checkpoint": Path(args.checkpoint).name,
                  "run": {k: run_config.get(k) for k in ("project_name", "run_name", "data_paths", "lr")}},
    })
    print(f"wrote {args.output}: {model.num_trainable_params():,} trainable parameters, "
          f"puzzle table {model.num_puzzle_table_params():,}")
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
    p.add_argument("checkpoint", help="the original run's checkpoint file (e.g. step_65104)")
    p.add_argument("--config", required=True, help="the all_config.yaml the original run wrote")
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
