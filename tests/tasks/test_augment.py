from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tasks.shared_data import arc_tasks, sudoku_rows
from trm_core.tasks import arc, maze, sudoku
from trm_core.tasks.augment import (
    DIHEDRAL_INVERSE,
    ArcAug,
    SudokuAug,
    SudokuAugBatch,
    dihedral,
    dihedral_batch,
    dihedral_rows,
    dihedral_tensor,
    inverse_dihedral,
    inverse_dihedral_batch,
    parse_version_name,
    random_offset,
    version_name,
)

# The original's dihedral_transform ids, written from its definition (dataset/common.py)
NUMPY_DIHEDRAL = [
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    np.fliplr,
    np.flipud,
    lambda a: a.T,
    lambda a: np.fliplr(np.rot90(a, 1)),
]

grids = st.integers(1, 7).flatmap(lambda h: st.integers(1, 7).flatmap(
    lambda w: st.lists(st.lists(st.integers(0, 9), min_size=w, max_size=w), min_size=h, max_size=h)))
seeds = st.integers(0, 2**32 - 1)


@given(grids, st.integers(0, 7))
def test_dihedral_numbering_matches_the_original(grid, k):
    assert dihedral(grid, k) == NUMPY_DIHEDRAL[k](np.array(grid)).tolist()


@given(grids, st.integers(0, 7))
def test_dihedral_inverse(grid, k):
    assert inverse_dihedral(dihedral(grid, k), k) == grid
    assert dihedral(dihedral(grid, k), DIHEDRAL_INVERSE[k]) == grid
    rows = ["".join(str(v) for v in row) for row in grid]
    assert dihedral_rows(dihedral_rows(rows, k), k, inverse=True) == rows


@given(grids, st.integers(0, 7))
def test_dihedral_tensor_matches_the_original_on_batches(grid, k):
    batch = np.stack([np.array(grid), np.array(grid) * 2 % 10])
    out = dihedral_tensor(torch.tensor(batch), k)
    assert [o.tolist() for o in out] == [NUMPY_DIHEDRAL[k](b).tolist() for b in batch]


@settings(max_examples=30)
@given(st.integers(1, 9), st.lists(st.integers(0, 7), min_size=1, max_size=12), seeds)
def test_dihedral_batch_gives_each_row_its_own_transform(side, ks, seed):
    x = torch.randint(0, 6, (len(ks), side, side), generator=torch.Generator().manual_seed(seed))
    out = dihedral_batch(x, ks)
    for i, k in enumerate(ks):
        assert out[i].tolist() == NUMPY_DIHEDRAL[k](x[i].numpy()).tolist()
    assert torch.equal(inverse_dihedral_batch(out, ks), x)


def test_dihedral_batch_on_non_square_grids_needs_one_output_shape():
    x = torch.arange(2 * 3 * 5).view(2, 3, 5)
    assert dihedral_batch(x, [0, 5]).shape == (2, 3, 5) and dihedral_batch(x, [1, 6]).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="two shapes"):
        dihedral_batch(x, [0, 1])
    with pytest.raises(ValueError, match="one dihedral transform id per row"):
        dihedral_batch(x, [0])
    with pytest.raises(ValueError, match="must be in 0-7"):
        dihedral_batch(x, [0, 8])


def test_dihedral_rejects_unknown_ids():
    with pytest.raises(ValueError, match="id 8 is out of range 0-7"):
        dihedral([[1]], 8)


def reference_shuffle(aug: SudokuAug, grid):
    """The original shuffle_sudoku steps: transpose?, cell (i, j) <- (row_perm[i], col_perm[j]), digits."""
    x = np.array(grid)
    if aug.transpose:
        x = x.T
    mapping = np.array([aug.row_perm[i // 9] * 9 + aug.col_perm[i % 9] for i in range(81)])
    return np.array(aug.digit_map)[x.flatten()[mapping].reshape(9, 9)].tolist()


@settings(max_examples=50)
@given(seeds, st.integers(0, 19))
def test_sudoku_aug_inverts_matches_the_original_and_keeps_solutions_valid(seed, index):
    q, a = sudoku_rows("forum_hardest_1905_11plus_train_1k.csv", 20)[index]
    puzzle, answer = sudoku.parse(q), sudoku.parse(a)
    aug = SudokuAug.random(random.Random(seed))
    new_puzzle, new_answer = aug.apply(puzzle), aug.apply(answer)
    assert new_puzzle == reference_shuffle(aug, puzzle)
    assert aug.invert(new_puzzle) == puzzle and aug.invert(new_answer) == answer
    assert sudoku.verify(new_puzzle, new_answer) == []
    assert sum(v == 0 for row in new_puzzle for v in row) == sum(v == 0 for row in puzzle for v in row)


@settings(max_examples=20)
@given(seeds)
def test_sudoku_aug_batch_is_each_rows_symmetry_on_grids_and_tokens(seed):
    rng = random.Random(seed)
    augs = [SudokuAug.random(rng) for _ in range(6)]
    batch = SudokuAugBatch.stack(augs)
    rows = sudoku_rows("forum_hardest_1905_11plus_train_1k.csv", 6)
    grids = torch.tensor([sudoku.parse(q) for q, _ in rows], dtype=torch.uint8)
    out = batch.apply(grids)
    assert out.dtype == torch.uint8 and len(batch) == 6 and batch[3] == augs[3]
    for i, aug in enumerate(augs):
        assert out[i].tolist() == reference_shuffle(aug, grids[i].tolist())
    assert torch.equal(batch.invert(out), grids)
    tokens = torch.tensor([sudoku.encode(g) for g in grids.tolist()])
    tokens[0, 5] = sudoku.PAD  # PAD is a position like any other and keeps its id
    moved = batch.apply_tokens(tokens)
    assert moved[1:].tolist() == [sudoku.encode(g) for g in out[1:].tolist()]
    assert int((moved[0] == sudoku.PAD).sum()) == 1
    assert torch.equal(batch.invert_tokens(moved), tokens)


def test_sudoku_aug_refuses_moves_that_break_bands():
    ident = tuple(range(9))
    with pytest.raises(ValueError, match="row_perm .* out of its band"):
        SudokuAug(tuple(range(10)), False, (3, 1, 2, 0, 4, 5, 6, 7, 8), ident)
    with pytest.raises(ValueError, match="digit_map must keep 0"):
        SudokuAug((1, 0, 2, 3, 4, 5, 6, 7, 8, 9), False, ident, ident)


@settings(max_examples=50)
@given(grids, seeds)
def test_arc_aug_inverts_and_keeps_black(grid, seed):
    aug = ArcAug.random(random.Random(seed))
    out = aug.apply(grid)
    assert aug.invert(out) == grid
    assert [v == 0 for row in out for v in row].count(True) == [v == 0 for row in grid for v in row].count(True)
    assert out == dihedral([[aug.perm[v] for v in row] for row in grid], aug.k)


def test_arc_aug_on_every_grid_of_real_tasks():
    rng = random.Random(0)
    for raw in list(arc_tasks("arc-agi-1/evaluation").values())[:100]:
        aug = ArcAug.random(rng)
        for pair in raw["train"] + raw["test"]:
            for grid in (pair["input"], pair["output"]):
                assert aug.invert(aug.apply(grid)) == grid
                assert arc.decode(arc.encode(aug.apply(grid))) == aug.apply(grid)


def test_version_names_follow_the_original_and_parse_back():
    aug = ArcAug(3, (0, 5, 3, 1, 2, 4, 6, 7, 8, 9))
    assert aug.name("007bbfb7") == "007bbfb7|||t3|||0531246789"
    assert parse_version_name("007bbfb7|||t3|||0531246789") == ("007bbfb7", 3, aug.perm)
    assert parse_version_name("007bbfb7") == ("007bbfb7", 0, tuple(range(10)))
    assert version_name("x", 0, range(10)) == "x|||t0|||0123456789"
    for bad in ("a|||t9|||0123456789", "a|||3|||0123456789", "a|||t1|||012345678", "a|||t1|||1023456789",
                "a|||t1|||0113456789", "a|||t1"):
        with pytest.raises(ValueError):
            parse_version_name(bad)


@given(seeds)
def test_random_offset_keeps_both_grids_on_the_canvas(seed):
    rng = random.Random(seed)
    shapes = [(rng.randint(1, 30), rng.randint(1, 30)) for _ in range(2)]
    r, c = random_offset(rng, shapes)
    assert all(r + h <= 30 and c + w <= 30 for h, w in shapes)


def _small_maze(rng: random.Random, size: int = 9):
    """A random wall layout with S and G on a shortest path, or None when G is unreachable."""
    cells = [[maze.WALL if rng.random() < 0.3 else maze.OPEN for _ in range(size)] for _ in range(size)]
    (sr, sc), (gr, gc) = rng.sample([(r, c) for r in range(size) for c in range(size)], 2)
    cells[sr][sc], cells[gr][gc] = maze.START, maze.GOAL
    puzzle = ["".join(row) for row in cells]
    path = maze.shortest_path(puzzle)
    return None if path is None else (puzzle, maze.mark_path(puzzle, path))


@settings(max_examples=60)
@given(seeds)
def test_dihedral_maze_keeps_shortest_paths_shortest(seed):
    made = _small_maze(random.Random(seed))
    if made is None:
        return
    puzzle, answer = made
    assert maze.is_shortest(puzzle, answer)
    for k in range(8):
        p, a = dihedral_rows(puzzle, k), dihedral_rows(answer, k)
        assert maze.verify(p, a) == [] and maze.is_shortest(p, a)
        assert dihedral_rows(p, k, inverse=True) == puzzle
