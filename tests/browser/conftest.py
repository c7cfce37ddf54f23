"""Browser tests: the real service in a subprocess on loopback, driven by Debian's Chromium via Playwright.

The server runs `python -m service` (as users do) on the bundled Sudoku model plus tiny real Maze
and ARC checkpoints (random weights, 10x10 grids), so every tab of the page has a model behind it,
and a tiny Sudoku model whose checkpoint carries a serving recipe (`CARD_RECIPE`).
Chromium is the system package (`apt-get install chromium`); Playwright only drives it, its own
browser downloads are never used. One server and one browser per session keep the suite short.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_ready
from tests.service.conftest import arc_table, make_model, small_arc_tasks
from trm_core import save_checkpoint

CHROMIUM = os.environ.get("TRM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BUNDLED_SUDOKU = Path(__file__).resolve().parents[2] / "trm_core" / "pretrained" / "sudoku.safetensors"
BUNDLED_RECIPE = {"views": 128, "max_steps": 16, "halting": "verified"}  # trm_core/pretrained/sudoku.md
CARD_RECIPE = {"views": 4, "max_steps": 3, "halting": "verified"}  # of the served model "sudoku-card"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running `python -m service` with sudoku (bundled), maze, arc and sudoku-card models."""
    root = tmp_path_factory.mktemp("browser-ckpt")
    maze_path, arc_path, card_path = root / "maze.safetensors", root / "arc.safetensors", root / "card.safetensors"
    save_checkpoint(make_model("maze"), maze_path, metadata={"task": "maze", "train": {"note": "random weights"}})
    save_checkpoint(make_model("arc"), arc_path,
                    metadata={"task": "arc", "arc_tasks": arc_table(small_arc_tasks(2)), "train": {}})
    save_checkpoint(make_model("sudoku"), card_path, metadata={"task": "sudoku", "recipe": CARD_RECIPE})
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRM_")}
    env.update(TRM_MODELS=f"sudoku={BUNDLED_SUDOKU},maze={maze_path},arc={arc_path},sudoku-card={card_path}",
               TRM_DEVICE="cpu",
               TRM_PORT=str(port), TRM_TORCH_THREADS="1", TRM_MAX_BATCH="8", TRM_WARMUP_STEPS="1",
               TRM_LOG_LEVEL="warning")
    log = (root / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def server_log() -> str:
            log.seek(0)
            return log.read()

        wait_ready(proc, base, why_exited=server_log)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API keeps an asyncio loop running while it is open, which
    would break the anyio tests that run after this directory in the same session."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (tests/browser/install-chromium.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page at 1280x800 on the server's `/`, after the page has read the model list."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # The browser logs every 4xx as "Failed to load resource"; those are the API answering, not page errors.
    pg.on("console", lambda msg: errors.append(msg.text)
          if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready='true']", timeout=10_000)
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"
