"""A Debian bookworm base image made from Debian packages, for hosts that reach no container registry.

`debootstrap --variant=minbase bookworm` + `docker import` gives what `debian:bookworm-slim` gives
(plus the packages the Dockerfile installs anyway, so its apt step has nothing to fetch). When the
host's pip trusts its own CA bundle (PIP_CERT, or `cert` in pip's config: a TLS-inspecting proxy),
that bundle becomes the image's system bundle, so pip inside `docker build` trusts what the host's
pip trusts. The image is tagged by a hash of this recipe and of that bundle: a second run on the
same machine finds it and builds nothing.

    python deploy/base_image.py            # prints the tag
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "curl", "ca-certificates")
REPO = "trm-serve-base"


def pip_cert() -> Path | None:
    """The CA bundle the host's pip uses, when it names one (PIP_CERT or `cert` in pip's config)."""
    value = os.environ.get("PIP_CERT")
    if not value:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            key, _, val = line.partition("=")
            if key.strip().endswith(".cert"):
                value = val.strip().strip("'\"")
    return Path(value) if value and Path(value).is_file() else None


def recipe_tag(cert: Path | None) -> str:
    h = hashlib.sha256(f"{SUITE}|{MIRROR}|{','.join(PACKAGES)}|minbase|v1".encode())
    if cert is not None:
        h.update(cert.read_bytes())
    return f"{REPO}:{SUITE}-{h.hexdigest()[:12]}"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build(tag: str, cert: Path | None, log=sys.stderr) -> None:
    """debootstrap into a temporary directory, then `docker import` it as `tag`."""
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="trm-base-") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root),
                        MIRROR], check=True, stdout=log, stderr=log)
        if cert is not None:  # the host's bundle is Debian's plus the CAs the host adds: trust the same
            shutil.copyfile(cert, root / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for p in (root / cache).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", 'CMD ["/bin/bash"]', "-", tag], stdin=tar.stdout,
                       check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the debootstrap tree failed")


def ensure() -> tuple[str, bool]:
    """(tag, was_cached): the base image for this host, built when missing."""
    cert = pip_cert()
    tag = recipe_tag(cert)
    if image_exists(tag):
        return tag, True
    build(tag, cert)
    return tag, False


if __name__ == "__main__":
    print(ensure()[0])  # noqa: T201
