"""The halting table of docs/views.md ("Halting modes"), re-measured by bench/halting.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import require_shared

BENCH = Path(__file__).resolve().parents[2] / "bench" / "halting.py"


@pytest.mark.slow
def test_readme_halting_numbers(capsys):
    spec = importlib.util.spec_from_file_location("bench_halting", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    require_shared(bench.DEFAULT_CSV)
    assert bench.main(["--num", "200", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["num"] == 200
    assert out["learned"]["valid"] == 7 and out["learned"]["mean_steps"] == pytest.approx(7.36, abs=0.005)
    assert out["fixed"]["valid"] == 7 and out["fixed"]["mean_steps"] == 8
    assert out["verified"]["valid"] == 7 and out["verified"]["mean_steps"] == pytest.approx(7.89, abs=0.005)
