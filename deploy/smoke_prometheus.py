"""Prometheus side of the deployment smoke: a real Prometheus with deploy/prometheus.yml, the
dashboard's queries against it, `promtool check metrics`.

The scrape config is the one compose uses, with its target rewritten to the container's port on
127.0.0.1 (host networking); the queries are every `expr` of deploy/grafana's dashboard with its
`$model` variable matching every model, as Grafana's "All" does. A query that needs CUDA is
reported as skipped (by name), never counted as passed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml
from smoke_http import get_text

DEPLOY = Path(__file__).resolve().parent
PROMETHEUS_YML = DEPLOY / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "trm-serve.json"
CUDA_ONLY = ("trm_device_memory_bytes",)  # exposed only when torch sees a CUDA device


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    expr: str

    @property
    def needs_cuda(self) -> bool:
        return any(name in self.expr for name in CUDA_ONLY)


def dashboard_queries(path: Path = DASHBOARD) -> list[PanelQuery]:
    dash = json.loads(path.read_text())
    return [PanelQuery(p["title"], t["expr"].replace("$model", ".*"))
            for p in dash["panels"] for t in p.get("targets", []) if t.get("expr")]


def promtool_check(metrics_text: str) -> str:
    """`promtool check metrics` on an exposition; raises with its complaints."""
    out = subprocess.run(["promtool", "check", "metrics"], input=metrics_text, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"promtool check metrics failed: {out.stdout}{out.stderr}")
    return (out.stdout + out.stderr).strip()


class Prometheus:
    """`prometheus` on 127.0.0.1:`port` scraping the service at 127.0.0.1:`target_port`."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self.tmp = Path(tempfile.mkdtemp(prefix="trm-smoke-prom-"))
        self.proc: subprocess.Popen | None = None

    def config(self) -> dict:
        cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
        for job in cfg["scrape_configs"]:
            for sc in job["static_configs"]:
                sc["targets"] = [f"127.0.0.1:{self.target_port}" for _ in sc["targets"]]
        return cfg

    def __enter__(self) -> Prometheus:
        cfg = self.tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config()))
        self.log = open(self.tmp / "prometheus.log", "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(get_text(url))
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r}: {body}")
        return body["data"]["result"]

    def scraped_up(self) -> bool:
        return any(r["value"][1] == "1" for r in self.query('up{job="trm-serve"}'))

    def samples_of_last_scrape(self) -> float:
        result = self.query('scrape_samples_scraped{job="trm-serve"}')
        return float(result[0]["value"][1]) if result else 0.0


def check_panels(prom: Prometheus, queries: list[PanelQuery], timeout_s: float = 30.0) -> tuple[list, list, list]:
    """(with_data, skipped, empty) panel titles, retrying empty ones until timeout (scrape interval)."""
    skipped = sorted({q.panel for q in queries if q.needs_cuda})
    todo = [q for q in queries if not q.needs_cuda]
    deadline = time.monotonic() + timeout_s
    while True:
        todo = [q for q in todo if not prom.query(q.expr)]
        if not todo or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    empty = sorted({q.panel for q in todo})
    with_data = sorted({q.panel for q in queries if not q.needs_cuda} - set(empty))
    return with_data, skipped, [f"{q.panel}: {q.expr}" for q in todo] if empty else []
