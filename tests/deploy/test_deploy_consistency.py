"""The deployment files must name only real settings and real metrics, and agree on the drain budget.

Read as files (no docker engine needed); tests/deploy/test_smoke.py runs the image itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.service.conftest import make_settings, serve, sudoku_puzzles

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
K8S_DEPLOYMENT = ROOT / "deploy" / "k8s" / "deployment.yaml"
DEPLOY_FILES = [DOCKERFILE, COMPOSE, COMPOSE_GPU, *sorted((ROOT / "deploy").rglob("*.y*ml"))]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "trm-serve.json"
DOCKER_STOP_DEFAULT_GRACE_S = 10.0  # `docker stop` without -t, and `docker run` has no other setting
CACHE_VARS = ("HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH")


def dockerfile_env() -> dict[str, str]:
    """Every `ENV K=V` of the Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r'(\w+)=("[^"]*"|\S+)', line[4:]))
    return {k: v.strip('"') for k, v in env.items()}


def k8s_deployment() -> dict:
    return next(d for d in yaml.safe_load_all(K8S_DEPLOYMENT.read_text()) if d and d["kind"] == "Deployment")


def seconds(value: str | int | float) -> float:
    """Compose durations ("40s", "1m30s") and plain numbers."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value.strip())
    assert parts and value.strip(), f"unreadable duration {value!r}"
    return 60.0 * float(parts[1] or 0) + float(parts[2] or 0)


def test_every_trm_env_var_in_deploy_files_is_a_setting():
    known = {f"TRM_{name.upper()}" for name in Settings.model_fields}
    used = {m for f in DEPLOY_FILES for m in re.findall(r"\bTRM_[A-Z0-9_]+\b", f.read_text())}
    assert used and used <= known, sorted(used - known)


def test_yaml_files_parse():
    for f in DEPLOY_FILES[1:]:
        assert list(yaml.safe_load_all(f.read_text())), f


def test_drain_fits_the_grace_period_everywhere():
    """SIGKILL must come after the preStop hook and the whole drain (the process exits within
    TRM_DRAIN_TIMEOUT_S of SIGTERM, its TRM_PRESTOP_S included), in each way the image is run."""
    image_drain = float(dockerfile_env()["TRM_DRAIN_TIMEOUT_S"])
    budgets = {"docker run": (DOCKER_STOP_DEFAULT_GRACE_S, 0.0, image_drain)}

    trm = yaml.safe_load(COMPOSE.read_text())["services"]["trm"]
    budgets["compose"] = (seconds(trm.get("stop_grace_period", DOCKER_STOP_DEFAULT_GRACE_S)), 0.0,
                          float(trm["environment"].get("TRM_DRAIN_TIMEOUT_S", image_drain)))

    spec = k8s_deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    hook = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    prestop = float(hook[-1]) if hook[:1] == ["sleep"] else 0.0
    budgets["kubernetes"] = (float(spec.get("terminationGracePeriodSeconds", 30)), prestop,
                             float(env.get("TRM_DRAIN_TIMEOUT_S") or image_drain))

    for where, (grace, prestop, drain) in budgets.items():
        assert grace > prestop + drain, f"{where}: grace {grace}s <= preStop {prestop}s + drain {drain}s"
    # compose and Kubernetes give longer drains than the image, and say so explicitly
    assert "TRM_DRAIN_TIMEOUT_S" in trm["environment"] and "TRM_DRAIN_TIMEOUT_S" in env
    assert budgets["compose"][2] > image_drain and budgets["kubernetes"][2] > image_drain


def test_caches_are_on_writable_volumes_under_a_read_only_root():
    env = dockerfile_env()
    spec = k8s_deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty]
    k8s_env = {e["name"]: e.get("value") for e in container["env"]}
    for var in CACHE_VARS:
        for where, path in (("Dockerfile", env.get(var)), ("Deployment", k8s_env.get(var))):
            assert path, f"{where} does not set {var}"
            assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), \
                f"{where}: {var}={path} is not under an emptyDir mount {writable}"


def test_compose_reserves_a_gpu_only_in_the_gpu_override():
    base = yaml.safe_load(COMPOSE.read_text())["services"]["trm"]
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())["services"]["trm"]
    assert "deploy" not in base and base["environment"]["TRM_DEVICE"].endswith("auto}")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def compose_tool() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["cpu", "gpu"])
def test_compose_config_is_valid(files):
    tool = compose_tool()
    if tool is None:
        msg = "neither docker-compose nor `docker compose` is installed (deploy/install-smoke-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    args = [a for f in files for a in ("-f", str(f))]
    out = subprocess.run([*tool, *args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    merged = yaml.safe_load(out.stdout)["services"]["trm"]
    assert ("deploy" in merged) == (COMPOSE_GPU in files), merged


def test_dashboard_has_panels_for_views_row_reasons_and_adaptation():
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for name in ("trm_group_rows_", "trm_group_row_steps_", "trm_rows_finished_total", "trm_adapt_jobs_held",
                 "trm_adapt_jobs_total"):
        assert name in exprs, name
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


@pytest.mark.anyio
async def test_dashboard_hpa_and_adapter_use_exposed_metric_names(checkpoints, anyio_backend):
    texts = [DASHBOARD.read_text()] + [f.read_text() for f in DEPLOY_FILES if "k8s" in str(f)]
    used = {m for t in texts for m in re.findall(r"\btrm_[a-z_]+\b", t)} - {"trm_serve"}
    async with serve(make_settings(checkpoints, names=("sudoku", "arc"))) as (_, client):
        await client.post("/v1/sudoku/solve", json={"puzzle": sudoku_puzzles(1)[0]})
        assert (await client.get("/v1/arc/tasks/no-such-job")).status_code == 404  # adaptation metrics start
        text = (await client.get("/metrics")).text
    # Samples, plus families announced without samples yet (labelled counters before their first event).
    exposed = set(re.findall(r"^(trm_[a-z_]+)", text, re.M)) | set(re.findall(r"^# TYPE (trm_[a-z_]+)", text, re.M))
    for name in list(exposed):  # a histogram family is queried through its _bucket/_sum/_count series
        exposed |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
    exposed.add("trm_device_memory_bytes")  # CUDA only; asserted absent on CPU in test_lifecycle
    assert used and used <= exposed, sorted(used - exposed)
