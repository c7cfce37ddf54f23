"""`trm train CONFIG [--section.key=value ...]`: train a TRM from a TOML config.

Run under `torchrun --nproc-per-node N -m training.train CONFIG ...` for N processes (NCCL on GPUs,
gloo on CPU). A run directory holds config.json, metrics.jsonl and a resumable `checkpoint/`;
running the same command again resumes it (`--run.resume=false` to refuse).
"""

from __future__ import annotations

import logging
import sys

from .config import ConfigError, config_help, load_config, parse_cli
from .ddp import close_distributed, init_distributed
from .examples import DataError
from .trainer import Trainer

__all__ = ["main"]

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print("usage: trm train CONFIG [--section.key=value ...]\n\n"  # noqa: T201 - CLI help
              "CONFIG: a TOML file or the name of a bundled config in training/configs/\n"
              "(sudoku-mlp, sudoku-att, maze-att, arc1, arc2, sudoku-demo, ...).\n\noverrides (defaults shown):\n"
              + config_help())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path, overrides = parse_cli(argv)
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        print(f"trm train: {e}", file=sys.stderr)  # noqa: T201 - CLI failure line
        return 2
    info = init_distributed(cfg.run.device)
    trainer = None
    try:
        trainer = Trainer(cfg, info)
        result = trainer.train()
        if info.is_main:
            log.info("done: step %d, %.1f min, eval %s", result["step"], result["wall_s"] / 60, result["eval"])
        return 0
    except (ConfigError, DataError) as e:
        print(f"trm train: {e}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        if trainer is not None:
            trainer.close()
        close_distributed()


if __name__ == "__main__":
    raise SystemExit(main())
