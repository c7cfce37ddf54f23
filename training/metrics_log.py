"""Metrics sink: one JSON line per record in `<run>/metrics.jsonl`, plus TensorBoard when installed.

Only the main rank writes. TensorBoard is an optional import: without the package the JSONL file is
the whole record, and nothing else changes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog"]

log = logging.getLogger(__name__)


class MetricsLog:
    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard not installed; metrics go to %s only", self.path)
            else:
                self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, kind: str, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "time": round(time.time(), 3), **scalars}, sort_keys=True) + "\n")
        if self._tb is not None:
            step = int(record.get("step", 0))
            for k, v in scalars.items():
                if k != "step":
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
