#!/usr/bin/env python3
"""Deployment smoke: build the image, run it as an operator would, scrape it with Prometheus, stop it.

    python deploy/smoke.py [--base IMAGE] [--env TRM_X=V ...] [--keep-container]   # project venv, root

1. Base image: `--base` when given, else a Debian bookworm base made from Debian packages
   (deploy/base_image.py, cached by recipe hash). The host's pip settings reach the build
   (deploy/pip_build_args.py); torch is whatever `torch==VERSION` resolves to there (on a CPU host's
   index: the CPU wheel) - the Dockerfile's default is the CUDA build.
2. `docker build` (host network), then `docker run` with host networking on a free 127.0.0.1 port,
   read-only root filesystem with tmpfs where the Kubernetes Deployment mounts emptyDir volumes.
3. Checks: ready (/readyz), the README's Sudoku and Maze solved, a 422 problem+json, uid 10001,
   `trm train --help` in the image, the HEALTHCHECK turns healthy, `promtool check metrics`.
4. Prometheus (deploy/prometheus.yml, target rewritten) scrapes it through a mixed load; every
   dashboard query must return series (CUDA-only ones are named as skipped).
5. `docker stop` (Docker's default grace, 10 s) with requests in flight: every one answered (200 or
   503 problem+json), exit code 0.

Prints one JSON line of figures; exits 1 (after printing it, with "error") when a check fails.
Traffic goes to 127.0.0.1 only (and pip/apt's registries during the build).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import base_image
import smoke_http as h
import yaml
from pip_build_args import LocalIndex
from smoke_prometheus import Prometheus, check_panels, dashboard_queries, promtool_check

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "trm-serve:smoke"
TORCH_VERSION = "2.13.0"
DOCKER_STOP_GRACE_S = 10  # Docker's default; the smoke never passes -t
IN_FLIGHT = 20


def log(msg: str) -> None:
    print(f"[smoke {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: T201


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in 18000-18999 (away from other services' usual ports)."""
    for _ in range(200):
        port = random.randint(18000, 18999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 18000-18999")


def docker(*args: str, check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, text=True, capture_output=capture, **kw)


def build_image(base: str) -> float:
    """`docker build` with the host's pip settings; returns seconds."""
    with LocalIndex() as index:
        args = {"BASE_IMAGE": base, "TORCH_VERSION": TORCH_VERSION, "TORCH_INDEX": "", **index.build_args()}
        if base_image.pip_cert() is not None:  # base_image put the host's bundle at the system path
            args["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
        cmd = ["build", "--network", "host", "-t", IMAGE]
        for k, v in args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        previous = docker("image", "inspect", "-f", "{{.Id}}", IMAGE, check=False).stdout.strip()
        t0 = time.monotonic()
        # The classic builder: Debian's docker.io has no buildx; build args and --network host suffice.
        out = subprocess.run(["docker", *cmd, str(ROOT)], env={**os.environ, "DOCKER_BUILDKIT": "0"},
                             stdout=sys.stderr, stderr=sys.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"docker build failed (exit {out.returncode}; its output is above)")
        seconds = time.monotonic() - t0
        if previous and previous != docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip():
            docker("rmi", previous, check=False)  # the last run's image, untagged now: free its layers
        return seconds


def image_facts() -> dict:
    """uid, `trm train --help`, the bundled checkpoints' paths: from a throwaway container, no network."""
    script = ("id -u; trm train --help > /dev/null && echo train-ok; "
              "python -c 'from service.settings import bundled_models as b; print(\",\".join(b()))'")
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c", script).stdout.split()
    return {"uid": int(out[0]), "train_help": out[1] == "train-ok", "bundled": out[2].split(",")}


def make_arc_checkpoint(directory: Path) -> Path:
    """A tiny real ARC model (random weights) answering smoke_http.ARC_TASK_KNOWN: the ARC solve and
    adaptation paths (and their metrics) run in the image without shipping an ARC checkpoint."""
    import torch

    from trm_core import TRM, TRMConfig, save_checkpoint
    from trm_core.tasks import arc

    versions = 3
    cfg = TRMConfig(hidden_size=32, num_heads=2, expansion=2.0, L_layers=1, H_cycles=1, L_cycles=1,
                    halt_max_steps=4, seq_len=100, vocab_size=12, puzzle_emb_ndim=32, puzzle_emb_len=2,
                    num_puzzle_identifiers=1 + versions, pos_encodings="rope", task="arc",
                    grid_height=10, grid_width=10)
    torch.manual_seed(0)
    model = TRM(cfg).eval()
    table = {arc.task_fingerprint(h.ARC_TASK_KNOWN): [
        {"puzzle_id": 1 + i, "k": i, "perm": "0123456789"} for i in range(versions)]}
    path = directory / "arc.safetensors"
    save_checkpoint(model, path, metadata={"task": "arc", "arc_tasks": table,
                                           "train": {"note": "random weights, deployment smoke"}})
    return path


def k8s_writable_mounts() -> list[str]:
    """The paths the Kubernetes Deployment mounts as emptyDir (its root filesystem is read-only)."""
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    dep = next(d for d in docs if d and d.get("kind") == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    empty = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    return [m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] in empty]


def run_container(name: str, port: int, models: list[str], arc_dir: Path, extra_env: list[str]) -> float:
    """`docker run` as an operator would (host network, loopback); returns when started."""
    args = ["run", "-d", "--name", name, "--network", "host", "--read-only",
            "-v", f"{arc_dir}:/smoke-models:ro",
            "-e", "TRM_HOST=127.0.0.1", "-e", f"TRM_PORT={port}", "-e", f"TRM_MODELS={','.join(models)}",
            "-e", "TRM_ADAPT_MAX_STEPS=4", "-e", "TRM_ADAPT_VERSIONS=2", "-e", "TRM_TORCH_THREADS=2",
            # a deadline long enough that admission takes the in-flight requests of stop_under_load on a
            # busy CPU (it refuses, 429, what cannot finish in time); the drain budget bounds them anyway
            "-e", "TRM_REQUEST_TIMEOUT_S=120"]
    for kv in extra_env:
        args += ["-e", kv]
    for path in k8s_writable_mounts():
        args += ["--tmpfs", f"{path}:uid=10001,gid=10001,mode=0700" if path.startswith("/home") else path]
    docker(*args, IMAGE)
    return time.monotonic()


def health_status(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()


def stop_under_load(name: str, base: str) -> dict:
    """`docker stop` (default grace) with IN_FLIGHT requests in flight; what each got, exit code, time."""
    flight = h.InFlight()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures = h.send_in_flight(base, IN_FLIGHT, pool)
        stats: dict = {}

        def all_in() -> bool:  # every request accepted: each has at least one row queued or running
            stats.update(h.call(base, "GET", "/v1/stats").body or {})
            rows = stats.get("queue_depth", 0) + stats.get("active_slots", 0)
            return rows >= IN_FLIGHT or all(f.done() for f in futures)

        h.wait_until(all_in, 15.0, 0.1)
        # answered before SIGTERM (not counting 429 refusals, which come back at once)
        done_before = sum(f.done() and f.result().status != 429 for f in futures)
        t0 = time.monotonic()
        stop = docker("stop", name, check=False)  # no -t: Docker's default grace
        stop_s = time.monotonic() - t0
        flight.replies = [f.result() for f in futures]
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
    by_status: dict[str, int] = {}
    for r in flight.replies:
        by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
    return {"exit_code": state["ExitCode"], "oom_killed": state["OOMKilled"], "seconds": round(stop_s, 2),
            "grace_s": DOCKER_STOP_GRACE_S, "requests": len(flight.replies), "finished_before_stop": done_before,
            "answered": flight.answered, "refused": flight.refused, "lost": flight.lost, "by_status": by_status,
            "docker_stop_rc": stop.returncode, "lost_errors": sorted({r.error for r in flight.replies if r.error})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="base image for the Dockerfile (default: a Debian base built here, cached)")
    ap.add_argument("--keep-container", action="store_true", help="leave the stopped container for inspection")
    ap.add_argument("--env", action="append", default=[], metavar="TRM_X=V",
                    help="one more `docker run -e` (e.g. TRM_DRAIN_TIMEOUT_S=30, to see a drain longer than the grace)")
    opts = ap.parse_args()
    fig: dict = {"image": IMAGE, "env": opts.env}
    name = f"trm-smoke-{os.getpid()}"
    port = free_port()
    prom_port = next(p for p in iter(free_port, None) if p != port)
    base = f"http://127.0.0.1:{port}"
    t_start = time.monotonic()
    arc_dir = Path(tempfile.mkdtemp(prefix="trm-smoke-arc-"))
    try:
        t0 = time.monotonic()
        if opts.base:
            fig["base_image"], fig["base_cached"] = opts.base, True
        else:
            log("base image (debootstrap, cached by recipe hash)")
            fig["base_image"], fig["base_cached"] = base_image.ensure()
        fig["base_s"] = round(time.monotonic() - t0, 1)
        log(f"docker build on {fig['base_image']}")
        fig["build_s"] = round(build_image(fig["base_image"]), 1)
        fig["image_bytes"] = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
        fig["image_mb"] = round(fig["image_bytes"] / 1e6)
        facts = image_facts()
        fig["uid"], fig["train_help"] = facts["uid"], facts["train_help"]
        if facts["uid"] != 10001 or not facts["train_help"]:
            raise AssertionError(f"image runs as uid {facts['uid']}, `trm train --help` ok: {facts['train_help']}")
        arc_dir.chmod(0o755)
        make_arc_checkpoint(arc_dir).chmod(0o644)
        models = [*facts["bundled"], "arc=/smoke-models/arc.safetensors"]
        log(f"docker run {name} on 127.0.0.1:{port}")
        started = run_container(name, port, models, arc_dir, opts.env)
        ready = h.wait_until(lambda: h.call(base, "GET", "/readyz", timeout_s=2).status == 200, 180.0, 0.1)
        if ready is None:
            raise AssertionError(f"not ready in 180 s: {docker('logs', name, check=False).stderr[-2000:]}")
        fig["ready_s"] = round(time.monotonic() - started, 1)
        fig["solves"] = h.solve_checks(base)
        fig["promtool"] = promtool_check(h.get_text(base + "/metrics")) or "ok"
        with Prometheus(prom_port, port) as prom:
            log("Prometheus up; mixed load")
            if h.wait_until(prom.scraped_up, 60.0, 0.5) is None:
                raise AssertionError("Prometheus never scraped the service (up != 1)")
            fig["load_replies"] = h.mixed_load(base)
            healthy = h.wait_until(lambda: health_status(name) == "healthy", 60.0, 0.5)
            fig["healthy_after_s"] = round(time.monotonic() - started, 1) if healthy is not None else None
            if healthy is None:
                raise AssertionError(f"HEALTHCHECK never healthy: {health_status(name)}")
            s0 = prom.samples_of_last_scrape()  # wait for one scrape after the load, then query
            h.wait_until(lambda: prom.samples_of_last_scrape() != s0, 20.0, 0.5)
            queries = dashboard_queries()
            with_data, skipped, empty = check_panels(prom, queries)
            fig["panels"] = {"queries": len(queries), "with_data": len(with_data), "skipped_cuda": skipped,
                             "empty": empty}
            if empty:
                raise AssertionError(f"dashboard queries without data: {empty}")
        log(f"docker stop with {IN_FLIGHT} requests in flight")
        fig["docker_stop"] = stop_under_load(name, base)
        stop = fig["docker_stop"]
        if stop["exit_code"] != 0 or stop["lost"]:
            raise AssertionError(f"docker stop: exit {stop['exit_code']}, {stop['lost']} request(s) lost")
        if stop["finished_before_stop"] + stop["refused"] >= stop["requests"]:
            raise AssertionError(f"docker stop: no request was in flight at SIGTERM: {stop}")
        fig["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure becomes the JSON line's "error" and exit 1
        fig["ok"], fig["error"] = False, f"{type(e).__name__}: {e}"
        log(traceback.format_exc())
    finally:
        if not opts.keep_container:
            docker("rm", "-f", name, check=False)
        shutil.rmtree(arc_dir, ignore_errors=True)
        fig["total_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(fig), flush=True)  # noqa: T201
    return 0 if fig["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
