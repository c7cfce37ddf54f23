"""Per-example reveal fractions (`data.reveal_uniform`): one batch mixes puzzles as posted with easier ones."""

from __future__ import annotations

from functools import cache

import numpy as np

from tests.conftest import DATA, require_shared
from training.examples import SUDOKU_BLANK, load_examples
from training.stream import SlotStream

SUDOKU_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


@cache
def _puzzles():
    return load_examples(require_shared(SUDOKU_CSV), limit=400)


def _revealed_fractions(uniform: bool, reveal: float) -> np.ndarray:
    """Per drawn puzzle: the share of its blanks that came filled in."""
    data = _puzzles()
    rows = np.ones(400, bool)
    posted, _, _ = SlotStream(data, 400, range(400), seed=0).draw(rows, reveal=0.0)  # same puzzles, same order
    x, y, _ = SlotStream(data, 400, range(400), seed=0, reveal_uniform=uniform).draw(rows, reveal=reveal)
    blank = posted == SUDOKU_BLANK
    assert ((x == posted) | (blank & (x == y))).all()  # only blanks change, and only to their solution digit
    return (blank & (x != SUDOKU_BLANK)).sum(axis=1) / blank.sum(axis=1)


def test_uniform_reveal_spreads_fractions_around_the_same_mean():
    fixed = _revealed_fractions(False, 0.1)
    spread = _revealed_fractions(True, 0.1)
    assert abs(fixed.mean() - 0.1) < 0.02 and abs(spread.mean() - 0.1) < 0.02
    # one draw per blank at 0.1 of ~58 blanks: std 0.039; the uniform fraction adds 0.058 (std of U(0, 0.2)): 0.070
    assert spread.std() > 1.5 * fixed.std()
    assert (spread < 0.03).mean() > 0.05 and (spread > 0.17).mean() > 0.05  # near as posted, and twice as easy
    assert (_revealed_fractions(True, 0.0) == _revealed_fractions(False, 0.0)).all()  # off at 0: puzzles as posted
