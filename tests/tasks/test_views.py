"""Views: every family's inverses are exact, view 0 is the identity, and views are the original
builder's symmetries (so a solution stays a solution of the viewed puzzle)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_shared
from tests.tasks.shared_data import SUDOKU_DIR, read_csv_rows
from trm_core.tasks import maze, sudoku
from trm_core.tasks.augment import SudokuAug, dihedral_rows
from trm_core.tasks.views import MAZE_DIHEDRAL_ORDER, max_views, maze_views, sudoku_views, views_for


def _real_sudokus(n: int) -> list[tuple[list[int], list[int]]]:
    path = SUDOKU_DIR / "forum_hardest_1905_11plus_train_1k.csv"
    require_shared(path, "the Sudoku training CSV")
    rows = []
    for _, q, a, _ in read_csv_rows(path):
        rows.append((sudoku.encode(sudoku.parse(q)), sudoku.encode(sudoku.parse(a))))
        if len(rows) == n:
            return rows
    return rows


@settings(max_examples=30, deadline=None)
@given(num_views=st.integers(1, 40), seed=st.integers(0, 2**31), data=st.data())
def test_sudoku_views_invert_exactly_for_any_tokens(num_views, seed, data):
    views = sudoku_views(num_views, seed)
    batch = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 10), min_size=81, max_size=81),
                                            min_size=1, max_size=3)))
    viewed = views.apply(batch)  # [B, K, 81]
    assert viewed.shape == (len(batch), num_views, 81)
    assert torch.equal(views.invert(viewed), batch[:, None].expand_as(viewed))
    assert torch.equal(viewed[:, 0], batch)  # view 0 is the puzzle as posted
    k = data.draw(st.integers(0, num_views - 1))
    assert views.invert_one(k, viewed[0, k].tolist()) == batch[0].tolist()


@settings(max_examples=30, deadline=None)
@given(h=st.integers(2, 12), w=st.integers(2, 12), num_views=st.integers(1, 8), data=st.data())
def test_maze_views_invert_exactly_and_are_the_dihedral_maps(h, w, num_views, data):
    rows = ["".join(data.draw(st.lists(st.sampled_from("# SG"), min_size=w, max_size=w))) for _ in range(h)]
    views = maze_views(num_views, h, w)
    assert views.num_views == min(num_views, max_views("maze", (h, w)))
    tokens = torch.tensor(maze.encode(rows))
    viewed = views.apply(tokens)
    ks = [k for k in MAZE_DIHEDRAL_ORDER if h == w or k in (0, 2, 4, 5)]
    for i in range(views.num_views):
        assert maze.decode(viewed[i], height=h, width=w) == dihedral_rows(rows, ks[i])
        assert views.invert_one(i, viewed[i].tolist()) == tokens.tolist()
    assert torch.equal(views.invert(viewed), tokens.expand_as(viewed))


def test_sudoku_views_are_the_builders_symmetries_and_keep_solutions_solutions():
    import random

    views = sudoku_views(16, seed=7)
    rng = random.Random(7)
    augs = [None] + [SudokuAug.random(rng) for _ in range(15)]
    for puzzle, solution in _real_sudokus(5):
        vp, vs = views.apply(torch.tensor(puzzle)), views.apply(torch.tensor(solution))
        for k in range(16):
            grid = sudoku.decode(vp[k])
            if k:
                assert grid == augs[k].apply(sudoku.decode(puzzle))
            assert sudoku.verify(grid, sudoku.decode(vs[k])) == []
            assert views.invert_one(k, vs[k].tolist()) == solution


def test_views_for_caps_at_the_family_size_and_refuses_other_tasks():
    assert views_for("maze", 64, grid_shape=(10, 10)).num_views == 8
    assert views_for("maze", 64, grid_shape=(10, 12)).num_views == 4
    assert views_for("sudoku", 256).num_views == 256
    with pytest.raises(ValueError, match="no views"):
        views_for("arc", 2)
    with pytest.raises(ValueError, match="at least 1"):
        views_for("sudoku", 0)
