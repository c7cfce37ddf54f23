#!/usr/bin/env python3
"""Where the CUDA build of torch finds its CUDA libraries: the measurement behind the Dockerfile's base.

    python deploy/cuda_wheel_layout.py [--torch 2.13.0] [--index-url URL]   # needs ~8 GB in /tmp

Installs the CUDA build of torch (PyPI's `torch==VERSION` for linux x86_64) into a throwaway venv
with this host's Python, then prints one JSON line: the size of torch and of the `nvidia/*` pip
packages it pulled in, and, for torch's CUDA library, every shared library it needs and where the
dynamic loader finds it (`ldd`, with no LD_LIBRARY_PATH). A library found inside site-packages is
one a CUDA runtime base image would carry a second time; the only ones expected outside are glibc's
and the driver's (libcuda.so, mounted by the NVIDIA container runtime; no GPU here, so not found).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch", default="2.13.0")
    ap.add_argument("--index-url", default="https://pypi.org/simple", help="where the CUDA build is (not a CPU index)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="trm-cuda-layout-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--isolated"]
        if os.environ.get("PIP_CERT"):  # --isolated drops pip's config: keep the host's CA bundle
            pip += ["--cert", os.environ["PIP_CERT"]]
        subprocess.run([*pip, "--index-url", opts.index_url, f"torch=={opts.torch}"], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        torch_lib = site / "torch" / "lib"
        cuda_so = next(iter(sorted(torch_lib.glob("libtorch_cuda*.so"))), None)
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        deps: dict[str, str] = {}
        if cuda_so is not None:
            ldd = subprocess.run(["ldd", str(cuda_so)], capture_output=True, text=True, env=env).stdout
            for m in re.finditer(r"^\s*(\S+) => (.+?) \(|^\s*(\S+) => not found", ldd, re.M):
                name, where = (m[1], m[2]) if m[1] else (m[3], "not found")
                deps[name] = ("site-packages/" + str(Path(where).resolve().relative_to(site.resolve()))
                              if str(Path(where).resolve()).startswith(str(site.resolve())) else where)
        probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import torch; print(torch.__version__, torch.version.cuda, "
                                "torch.backends.cudnn.version(), torch.cuda.is_available())"],
                               capture_output=True, text=True, env=env)
        nvidia = site / "nvidia"
        fig = {
            "torch": opts.torch, "index_url": opts.index_url,
            "torch_mb": round(du_bytes(site / "torch") / 1e6),
            "nvidia_pip_mb": round(du_bytes(nvidia) / 1e6) if nvidia.is_dir() else 0,
            "nvidia_packages": sorted(p.name for p in nvidia.iterdir() if p.is_dir()) if nvidia.is_dir() else [],
            "triton_mb": round(du_bytes(site / "triton") / 1e6) if (site / "triton").is_dir() else 0,
            "site_packages_mb": round(du_bytes(site) / 1e6),
            "libtorch_cuda_deps_in_site_packages": sorted(n for n, w in deps.items() if w.startswith("site-")),
            "libtorch_cuda_deps_elsewhere": {n: w for n, w in sorted(deps.items()) if not w.startswith("site-")},
            "import": probe.stdout.strip() or probe.stderr.strip()[-300:],
        }
    print(json.dumps(fig))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
