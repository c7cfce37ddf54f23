"""The deployment files (no docker engine here) must name only real settings and real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.service.conftest import make_settings, serve, sudoku_puzzles

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_FILES = [ROOT / "Dockerfile", ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.y*ml"))]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "trm-serve.json"


def test_every_trm_env_var_in_deploy_files_is_a_setting():
    known = {f"TRM_{name.upper()}" for name in Settings.model_fields}
    used = {m for f in DEPLOY_FILES for m in re.findall(r"\bTRM_[A-Z0-9_]+\b", f.read_text())}
    assert used and used <= known, sorted(used - known)


def test_yaml_files_parse():
    for f in DEPLOY_FILES[1:]:
        assert list(yaml.safe_load_all(f.read_text())), f


@pytest.mark.anyio
async def test_dashboard_hpa_and_adapter_use_exposed_metric_names(checkpoints, anyio_backend):
    texts = [DASHBOARD.read_text()] + [f.read_text() for f in DEPLOY_FILES if "k8s" in str(f)]
    used = {m for t in texts for m in re.findall(r"\btrm_[a-z_]+\b", t)} - {"trm_serve"}
    async with serve(make_settings(checkpoints, names=("sudoku",))) as (_, client):
        await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0]})
        text = (await client.get("/metrics")).text
    # Samples, plus families announced without samples yet (labelled counters before their first event).
    exposed = set(re.findall(r"^(trm_[a-z_]+)", text, re.M)) | set(re.findall(r"^# TYPE (trm_[a-z_]+)", text, re.M))
    for name in list(exposed):  # a histogram family is queried through its _bucket/_sum/_count series
        exposed |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
    exposed.add("trm_device_memory_bytes")  # CUDA only; asserted absent on CPU in test_lifecycle
    assert used and used <= exposed, sorted(used - exposed)
    dash = json.loads(DASHBOARD.read_text())
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
