"""The host's pip settings, made usable inside `docker build` (host network, loopback only).

pip on a host may read wheels from local directories (`find-links = /opt/wheels`, an index at
`file:///opt/pypi/simple`): `docker build` cannot see those paths. `LocalIndex` serves exactly those
directories over HTTP on 127.0.0.1 for the length of the build and turns each setting into the
Dockerfile's `PIP_*` build arguments, the rest (remote indexes, the CA bundle's path, which the
base image carries, see base_image.py) passed as they are. Nothing is published beyond loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PORTS = range(18090, 18100)  # where the local index listens (see _bind)
# pip option -> Dockerfile build argument (the same names as pip's environment variables)
OPTIONS = {"index-url": "PIP_INDEX_URL", "extra-index-url": "PIP_EXTRA_INDEX_URL",
           "find-links": "PIP_FIND_LINKS", "trusted-host": "PIP_TRUSTED_HOST"}


def host_pip_options() -> dict[str, list[str]]:
    """pip's effective options on this host: config files, then PIP_* environment (which wins)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if sep and name in OPTIONS and not key.startswith(":env:"):
            found[name] = value.strip().strip("'\"").split()
    for name, var in OPTIONS.items():
        if os.environ.get(var):
            found[name] = os.environ[var].split()
    return found


def _local_dir(location: str) -> Path | None:
    path = unquote(urlsplit(location).path) if location.startswith("file:") else location
    if "://" in path:
        return None
    p = Path(path)
    return p.resolve() if p.is_dir() else None


class _Handler(SimpleHTTPRequestHandler):
    """Serves files by their own absolute path, under the allowed roots only."""

    def __init__(self, *args, roots: tuple[Path, ...], **kwargs) -> None:
        self.roots = roots
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        real = Path(os.path.realpath(unquote(urlsplit(path).path)))
        if any(real == r or r in real.parents for r in self.roots):
            return str(real)
        return "/nonexistent/"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass


def _bind(handler) -> ThreadingHTTPServer:
    """The first free port of PORTS: the URLs become build arguments, and Docker's layer cache keys on
    their values, so the same port on every run keeps the torch layer cached."""
    for port in PORTS:
        try:
            return ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            continue
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)


class LocalIndex:
    """Context manager: the host's local pip locations on http://127.0.0.1:PORT, and the build args."""

    def __init__(self, options: dict[str, list[str]] | None = None) -> None:
        self.options = host_pip_options() if options is None else options
        self.server: ThreadingHTTPServer | None = None

    def __enter__(self) -> LocalIndex:
        roots: list[Path] = []
        for name, values in self.options.items():
            for v in values:
                d = _local_dir(v)
                if d is not None:  # an index's pages link to ../../files: serve its parent too
                    roots.append(d if name == "find-links" else d.parent)
        if roots:
            handler = partial(_Handler, roots=tuple(roots))
            self.server = _bind(handler)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def url_of(self, location: str) -> str:
        d = _local_dir(location)
        if d is None or self.server is None:
            return location
        return f"http://127.0.0.1:{self.server.server_address[1]}{d}/"

    def build_args(self) -> dict[str, str]:
        args = {OPTIONS[name]: " ".join(self.url_of(v) for v in values) for name, values in self.options.items()}
        if self.server is not None:  # plain HTTP on loopback
            hosts = args.get("PIP_TRUSTED_HOST", "").split() + ["127.0.0.1"]
            args["PIP_TRUSTED_HOST"] = " ".join(hosts)
        return args
