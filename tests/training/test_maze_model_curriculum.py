"""The answer-revealing curriculum on Maze: revealed cells are path cells, the rest of the maze is kept."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import DATA
from training.config import ConfigError, DataConfig, RunConfig, TrainConfig
from training.data.build_maze import _split
from training.data.maze_gen import MazeGenConfig, generate_split
from training.examples import SUDOKU_BLANK, load_examples
from training.stream import SlotStream, reveal_givens
from trm_core import TRMConfig
from trm_core.tasks import maze

SUDOKU_CSV = DATA / "sudoku" / "forum_hardest_1905_11plus_train_1k.csv"


def _mazes(n: int = 6, side: int = 10):
    cfg = MazeGenConfig(height=side, width=side, min_moves=24)
    gen = generate_split(cfg, n, np.random.default_rng(3))
    puzzles = [maze.parse(m.question, height=side, width=side) for m in gen]
    answers = [maze.parse(m.answer, height=side, width=side) for m in gen]
    return puzzles, answers


def test_reveal_marks_only_path_cells_and_keeps_the_maze():
    puzzles, answers = _mazes()
    x = np.array([maze.encode(p) for p in puzzles], np.uint8)
    y = np.array([maze.encode(a) for a in answers], np.uint8)
    out = reveal_givens(x, y, 0.5, np.random.default_rng(0))
    changed = out != x
    assert changed.any()
    assert (out[changed] == 5).all() and (x[changed] == 2).all()  # open ' ' -> path 'o', nothing else
    path_cells = (y == 5)
    assert 0.35 < changed.sum() / path_cells.sum() < 0.65
    for p, a, row in zip(puzzles, answers, out, strict=True):
        grid = maze.decode(row, height=10, width=10)
        assert maze.parse(grid, height=10, width=10)  # still a valid puzzle (one S, one G, 'o' allowed)
        # the revealed maze still has the same answer: its shortest path is the labelled one
        assert maze.verify(grid, a) == [] and maze.is_shortest(grid, a)
        assert [r.replace("o", " ") for r in grid] == p
    assert (reveal_givens(x, y, 1.0, np.random.default_rng(0)) == y).all()
    assert reveal_givens(x, y, 0.0, np.random.default_rng(0)) is x


def test_sudoku_reveal_is_unchanged_by_the_generalisation():
    """The same cells as the Sudoku-only rule (blanks), from the same draws: seeded evals do not move."""
    data = load_examples(SUDOKU_CSV, limit=50)
    labels = data.labels.astype(np.uint8)
    got = reveal_givens(data.inputs, labels, 0.3, np.random.default_rng([0, 0xE7A1]))
    rng = np.random.default_rng([0, 0xE7A1])
    old = np.where((data.inputs == SUDOKU_BLANK) & (rng.random(data.inputs.shape) < 0.3), labels, data.inputs)
    assert (got == old).all()


def _config(task: str, **data) -> TrainConfig:
    model = TRMConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=32, puzzle_emb_len=1, seq_len=100,
                      vocab_size=6, task=task, grid_height=10, grid_width=10)
    return TrainConfig(model=model, data=DataConfig(path="x", **data), run=RunConfig(max_steps=1))


def test_config_accepts_maze_curriculum_and_refuses_arc():
    assert _config("maze", reveal_start=0.9, reveal_end=0.0, curriculum_steps=10).data.reveal_start == 0.9
    with pytest.raises(ConfigError, match="Sudoku and Maze"):
        _config("arc", reveal_start=0.5)


def test_slot_stream_reveals_path_cells_of_a_built_maze_split():
    puzzles, answers = _mazes(8)
    split = _split(puzzles, answers, aug=True)  # 8 mazes x 8 dihedral transforms, the builder's layout
    from training.examples import Examples

    data = Examples(split.inputs, split.labels.astype(np.int16), split.puzzle_identifiers, split.puzzle_indices,
                    split.group_indices, dict(split.meta))
    stream = SlotStream(data, global_batch_size=4, slots=range(4), seed=0)
    rows = np.ones(4, bool)
    x, y, _ = stream.draw(rows, reveal=0.6)
    assert ((x != y) <= (y == 5)).all()  # every cell still to fill in is a path cell
    assert (x == 5).any() and ((x == 5) <= (y == 5)).all()
    x0, y0, _ = SlotStream(data, 4, range(4), seed=0).draw(rows, reveal=0.0)
    assert (y0 == y).all() and not (x0 == 5).any()


def test_maze_rule_metrics_count_valid_and_shortest_routes_not_label_matches():
    from training.evaluate import maze_rule_sums

    puzzle = ["S  G", " ## ", "    "]
    shortest = ["SooG", " ## ", "    "]
    longer = ["S  G", "o##o", "oooo"]  # a valid route, 8 moves instead of 3
    broken = ["So G", " ## ", "    "]
    x = np.array([maze.encode(puzzle)] * 4)
    fixed = np.array([maze.encode(g) for g in (shortest, longer, broken, puzzle)])
    learned = np.array([maze.encode(g) for g in (shortest, shortest, longer, broken)])
    got = maze_rule_sums(x, fixed, learned, 3, 4).tolist()
    assert got == [2.0, 1.0, 3.0, 2.0]  # valid, shortest (fixed), valid, shortest (learned)
