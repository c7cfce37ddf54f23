"""What the smoke hands to `docker build`: the host's local pip locations served on loopback, and the
base image's cache tag. Real HTTP on 127.0.0.1, no Docker needed."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
import base_image  # noqa: E402
from pip_build_args import LocalIndex  # noqa: E402


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_local_locations_are_served_on_loopback_and_remote_ones_passed_through(tmp_path: Path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    index = tmp_path / "pypi" / "simple" / "demo"
    index.mkdir(parents=True)
    (index / "index.html").write_text('<a href="../../files/demo-1.0.tar.gz">demo-1.0.tar.gz</a>')
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "files" / "demo-1.0.tar.gz").write_bytes(b"sdist bytes")
    (tmp_path / "secret.txt").write_text("not for the build")
    options = {"find-links": [str(wheels)], "extra-index-url": [f"file://{tmp_path}/pypi/simple", "https://example.org/simple"]}
    with LocalIndex(options) as local:
        args = local.build_args()
        find_links, (extra_local, extra_remote) = args["PIP_FIND_LINKS"], args["PIP_EXTRA_INDEX_URL"].split()
        assert find_links.startswith("http://127.0.0.1:") and extra_remote == "https://example.org/simple"
        assert "127.0.0.1" in args["PIP_TRUSTED_HOST"].split()
        status, listing = fetch(find_links)
        assert status == 200 and b"demo-1.0-py3-none-any.whl" in listing
        assert fetch(find_links + "demo-1.0-py3-none-any.whl") == (200, b"wheel bytes")
        status, page = fetch(extra_local + "demo/")
        assert status == 200 and b"../../files/demo-1.0.tar.gz" in page
        assert fetch(extra_local + "demo/../../files/demo-1.0.tar.gz") == (200, b"sdist bytes")  # the page's link
        host = find_links.split("/")[2]
        assert fetch(f"http://{host}{tmp_path}/secret.txt")[0] == 404  # nothing outside the configured places
        assert fetch(f"http://{host}/etc/passwd")[0] == 404


def test_no_local_location_no_server():
    with LocalIndex({"index-url": ["https://example.org/simple"]}) as local:
        assert local.server is None
        assert local.build_args() == {"PIP_INDEX_URL": "https://example.org/simple"}


def test_base_image_tag_follows_the_ca_bundle(tmp_path: Path):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_text("CA one")
    b.write_text("CA two")
    tags = {base_image.recipe_tag(None), base_image.recipe_tag(a), base_image.recipe_tag(b)}
    assert len(tags) == 3 and all(t.startswith(f"{base_image.REPO}:{base_image.SUITE}-") for t in tags)
    assert base_image.recipe_tag(a) == base_image.recipe_tag(a)


def test_pip_cert_comes_from_the_environment_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cert = tmp_path / "ca.pem"
    cert.write_text("CA")
    monkeypatch.setenv("PIP_CERT", str(cert))
    assert base_image.pip_cert() == cert
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.pem"))
    assert base_image.pip_cert() is None
