"""The bundled model's card states numbers that `trm eval` reproduces.

The card (trm_core/pretrained/sudoku.md) carries its measurements in a machine-readable comment
block (`<!-- trm-eval ... -->`, one JSON object per line: the `trm eval` arguments and the result).
Each line is re-run here through the CLI; lines marked `"fast": true` (two 100-puzzle evaluations,
~2 s each) run by default, the others (the thousands of hard test puzzles) are marked slow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import SHARED, require_shared
from training.evaluate import main as eval_main
from trm_core import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "trm_core" / "pretrained" / "sudoku.md"
MODEL = REPO / "trm_core" / "pretrained" / "sudoku.safetensors"




def _card_entries() -> list[dict]:
    text = CARD.read_text()
    block = re.search(r"<!-- trm-eval\n(.*?)\n-->", text, re.S)
    assert block, f"{CARD} has no <!-- trm-eval ... --> block"
    return [json.loads(line) for line in block.group(1).splitlines() if line.strip()]


def _params():
    if not CARD.is_file():  # a missing card is a failure, not a skip: the model is part of the product
        return [pytest.param(None, id="card-missing")]
    out = []
    for i, entry in enumerate(_card_entries()):
        marks = [] if entry.get("fast") else [pytest.mark.slow]
        out.append(pytest.param(entry, id=f"{i}-n{entry['result']['count']}-reveal{entry['result']['reveal']}",
                                marks=marks))
    return out


def test_bundled_model_loads_small_and_self_describing():
    model, meta = load_checkpoint(MODEL)
    assert MODEL.stat().st_size < 4_000_000
    assert meta["task"] == "sudoku" and meta["train"]["steps"] > 0 and meta["train"]["ema"] is True
    assert model.config.seq_len == 81 and model.config.vocab_size == 11


@pytest.mark.parametrize("entry", _params())
def test_card_numbers_are_reproduced_by_trm_eval(entry, capsys):
    assert entry is not None, f"{CARD} is missing"
    require_shared(SHARED, "the data sets the card was measured on")
    args = [a.replace("../shared", str(SHARED)) for a in entry["args"]]
    args[0] = str(REPO / args[0])  # the model path is relative to the repository root
    assert eval_main(args) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = entry["result"]
    assert got["count"] == want["count"]
    # allow one puzzle of float round-off (thread count, batch order), never more
    tol = 1.0 / want["count"] + 1e-9
    for key in ("exact_accuracy", "learned_exact_accuracy"):
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])
    assert abs(got["cell_accuracy"] - want["cell_accuracy"]) <= 1e-3
    assert abs(got["mean_halt_step"] - want["mean_halt_step"]) <= 8 * tol
