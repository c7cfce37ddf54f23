from __future__ import annotations

import csv

import numpy as np
import pytest

from training.data.maze_gen import MazeGenConfig, generate_split, main, split_rngs, stats
from trm_core.tasks import maze


def test_generated_mazes_pass_verify_with_long_shortest_paths():
    cfg = MazeGenConfig()
    mazes = generate_split(cfg, 12, np.random.default_rng(0))
    for m in mazes:
        puzzle = maze.parse(m.question)  # 30x30, one S, one G, charset
        answer = maze.parse(m.answer)
        assert maze.verify(puzzle, answer) == [] and maze.is_shortest(puzzle, answer)
        assert m.moves == maze.shortest_path_length(puzzle) >= cfg.min_moves
        assert sum(row.count("o") for row in answer) == m.moves - 1
        assert cfg.min_wall_fraction <= m.wall_fraction <= cfg.max_wall_fraction
        assert m.question.count("#") == round(m.wall_fraction * 900)
    assert len({m.question for m in mazes}) == 12


def test_generation_is_seeded_and_splits_are_independent():
    cfg = MazeGenConfig(height=12, width=12, min_moves=20)
    a = generate_split(cfg, 5, split_rngs(4)[0])
    b = generate_split(cfg, 5, split_rngs(4)[0])
    assert a == b
    test = generate_split(cfg, 5, split_rngs(4)[1], exclude={m.question for m in a})
    assert not {m.question for m in a} & {m.question for m in test}


def test_other_sizes_and_thresholds():
    cfg = MazeGenConfig(height=10, width=14, min_moves=25)
    for m in generate_split(cfg, 5, np.random.default_rng(1)):
        puzzle = maze.parse(m.question, height=10, width=14)
        assert maze.is_shortest(puzzle, maze.parse(m.answer, height=10, width=14))
        assert m.moves >= 25
    s = stats(generate_split(cfg, 3, np.random.default_rng(2)))
    assert s["num"] == 3 and 25 <= s["moves_min"] <= s["moves_mean"] <= s["moves_max"]


def test_cli_writes_hf_layout_csvs(tmp_path):
    assert main(["--out", str(tmp_path), "--num-train", "3", "--num-test", "2", "--seed", "5"]) == 0
    for name, n in (("train.csv", 3), ("test.csv", 2)):
        with open(tmp_path / name, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["source", "question", "answer", "rating"] and len(rows) == n + 1
        for source, q, a, rating in rows[1:]:
            assert len(q) == len(a) == 900 and int(rating) >= 111 and "seed=5" in source
            assert maze.is_shortest(maze.parse(q), maze.parse(a))


@pytest.mark.slow
def test_two_thousand_mazes_take_minutes_not_hours(tmp_path):
    """training/data/README.md's measurement: `python -m training.data.maze_gen --out DIR --seed 0`."""
    import time
    t0 = time.perf_counter()
    assert main(["--out", str(tmp_path), "--seed", "0"]) == 0
    assert time.perf_counter() - t0 < 300
