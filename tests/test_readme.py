"""The README stays a short front page, and its test command is the one CI runs.

CI runs `.ci/run`; the README promises that its second command is exactly what CI runs, so the two
must not drift apart. The README links out to docs/ for everything else and stays short (the issue
that split it set a hard limit of 250 lines).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_test_command_is_what_ci_runs():
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    assert len(ci_lines) == 1, ci_lines
    assert ci_lines[0] in _bash_blocks(README.read_text()), "README's test command differs from .ci/run"


def test_readme_is_short_and_links_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for page in ("api", "views", "operations", "arc-adaptation", "benchmarks", "gpu", "training"):
        assert f"(docs/{page}.md)" in text, page
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
