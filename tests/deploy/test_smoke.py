"""The deployment smoke (deploy/smoke.py): the image built and run with plain `docker run`, scraped by
a real Prometheus, stopped under load. Needs Docker, debootstrap and Prometheus
(deploy/install-smoke-deps.sh, run by .ci/run); without them it is skipped locally and fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "deploy" / "smoke.py"


def missing_tools() -> list[str]:
    missing = [t for t in ("docker", "debootstrap", "prometheus", "promtool") if shutil.which(t) is None]
    if not missing and subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        missing.append("a running Docker daemon")
    return missing


def test_deployment_smoke():
    missing = missing_tools()
    if missing:
        msg = f"deployment smoke needs {', '.join(missing)} (deploy/install-smoke-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    out = subprocess.run([sys.executable, str(SMOKE)], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    assert lines, f"no JSON line; stderr:\n{out.stderr[-6000:]}"
    fig = json.loads(lines[-1])
    print(lines[-1])  # the figures, for `pytest -s`
    assert out.returncode == 0 and fig["ok"], f"{fig.get('error')}\n{out.stderr[-6000:]}"
    assert fig["uid"] == 10001 and fig["train_help"] and fig["promtool"]
    assert fig["solves"]["sudoku_steps"] >= 1 and fig["healthy_after_s"] is not None
    assert fig["load_replies"].get("422", 0) >= 2 and fig["load_replies"].get("200", 0) > 0
    panels = fig["panels"]
    assert panels["empty"] == [] and panels["with_data"] >= 15
    assert panels["skipped_cuda"] == ["Device memory (CUDA)"]  # named, not passed: this host has no GPU
    stop = fig["docker_stop"]
    assert stop["exit_code"] == 0 and stop["lost"] == 0 and stop["seconds"] < stop["grace_s"], stop
    assert stop["answered"] + stop["refused"] == stop["requests"]
    assert stop["finished_before_stop"] + stop["refused"] < stop["requests"]  # some were in flight at SIGTERM
