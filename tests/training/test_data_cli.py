from __future__ import annotations

from pathlib import Path

import pytest

from training.data.cli import main
from training.data.dataset import load_split

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.parametrize("task", ["sudoku", "maze", "arc", "maze-gen"])
def test_help_lists_options_with_defaults(task, capsys):
    with pytest.raises(SystemExit) as exc:
        main([task, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--seed" in out and "(default:" in out


def test_sudoku_command_builds_a_dataset(tmp_path):
    sudoku = DATA / "sudoku"
    code = main(["sudoku", "--train", str(sudoku / "forum_hardest_1106.csv"), "--test", str(sudoku / "magictour_top1465.csv"),
                 "--out", str(tmp_path), "--subsample", "4", "--num-aug", "2", "--test-limit", "3"])
    assert code == 0
    assert load_split(tmp_path, "train").inputs.shape == (12, 81)
    assert load_split(tmp_path, "test").inputs.shape == (3, 81)


def test_arc_command_with_relative_subsets(tmp_path):
    code = main(["arc", "--source", str(DATA / "arc"), "--subsets", "conceptarc", "arc-agi-1/evaluation",
                 "--test-set", "arc-agi-1/evaluation", "--out", str(tmp_path), "--num-aug", "1", "--max-tasks", "2"])
    assert code == 0
    assert load_split(tmp_path, "test").num_groups == 2
    assert (tmp_path / "arc_tasks.json").is_file() and (tmp_path / "test_puzzles.json").is_file()


def test_arc_command_takes_the_original_builders_flags(tmp_path):
    """`--input-file-prefix P --subsets names --test-set-name N --output-dir D`, as the original's command line."""
    prefix = Path(__file__).resolve().parents[1] / "fixtures" / "arc_original" / "inputs" / "arc-agi"
    code = main(["arc", "--input-file-prefix", str(prefix), "--output-dir", str(tmp_path), "--subsets", "training",
                 "evaluation", "concept", "--test-set-name", "evaluation", "--num-aug", "2"])
    assert code == 0
    assert load_split(tmp_path, "test").num_groups == 4  # the evaluation subset's tasks
    assert load_split(tmp_path, "train").num_groups == 13


@pytest.mark.parametrize("argv, message", [
    (["sudoku", "--train", "nope.csv", "--test", "nope.csv"], "trm build-data sudoku: nope.csv not found"),
    (["maze"], "trm build-data maze: give --train and --test CSVs, or --generate"),
    (["arc", "--subsets", "nowhere"], "is neither a folder of task files nor a *_challenges.json file"),
    (["arc", "--source", str(DATA / "arc"), "--subsets", "conceptarc", "--test-set", "arc-agi-1/evaluation"],
     "must be one of the subsets"),
])
def test_failures_exit_non_zero_with_a_one_line_reason(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
