from __future__ import annotations

import pytest

from trm_core.tasks import TASK_NAMES, TaskInputError, arc, get_codec, maze, sudoku
from trm_core.tasks.errors import MAX_ERRORS


def test_registry_returns_each_codec_and_names_unknown_tasks():
    assert get_codec("sudoku") is sudoku and get_codec("maze") is maze and get_codec("arc") is arc
    assert set(TASK_NAMES) == {"sudoku", "maze", "arc"}
    with pytest.raises(ValueError, match="unknown task 'chess'.*sudoku, maze, arc"):
        get_codec("chess")


SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
MAZE = ["#####", "#S  #", "### #", "#G  #", "#####"]
MAZE_SOLVED = ["#####", "#Soo#", "###o#", "#Goo#", "#####"]


def _round_trip(name: str) -> tuple:
    """(puzzle, its right answer, a wrong answer, the codec's answer after encode -> decode)."""
    if name == "sudoku":
        puzzle = sudoku.parse("." + SOLVED[1:])
        answer = sudoku.parse(SOLVED)
        wrong = [row[:] for row in answer]
        wrong[0][0], wrong[0][1] = wrong[0][1], wrong[0][0]
        return puzzle, answer, wrong, sudoku.decode(sudoku.encode(answer))
    if name == "maze":
        puzzle = maze.parse(MAZE, height=5, width=5)
        answer = maze.parse(MAZE_SOLVED, height=5, width=5)
        return puzzle, answer, puzzle, maze.decode(maze.encode(answer), height=5, width=5)
    puzzle = arc.parse([[1, 2, 3], [4, 5, 6]])
    answer = arc.parse([[6, 5], [4, 3], [2, 1]])
    return puzzle, answer, [[1, 2], [3]], arc.decode(arc.encode(answer, canvas=10), canvas=10)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_codec_round_trips_and_its_verify_decides(name):
    """The four functions each codec offers do their job: encode -> decode gives the grid back, and
    verify passes the right answer and names what is wrong with a bad one."""
    puzzle, answer, wrong, decoded = _round_trip(name)
    assert decoded == answer
    assert get_codec(name).verify(puzzle, answer) == []
    problems = get_codec(name).verify(puzzle, wrong)
    assert problems and all(isinstance(p, str) and p for p in problems)


def test_error_is_a_value_error_with_loc_and_all_errors():
    with pytest.raises(TaskInputError) as exc:
        sudoku.parse([[0] * 9] * 3 + [[0, 0, 12, 0, 0, 0, 0, "x", 0]] + [[0] * 9] * 5)
    err = exc.value
    assert isinstance(err, ValueError)
    assert err.loc == ("puzzle", 3, 2)
    assert err.errors == [(("puzzle", 3, 2), "row 3, column 2: value 12 is out of range 0-9"),
                          (("puzzle", 3, 7), "row 3, column 7: 'x' is not an integer "
                                             "(use 1-9 for a digit, 0 or null for a blank)")]
    assert "row 3, column 2: value 12 is out of range 0-9" in str(err)


def test_many_errors_are_capped_and_counted():
    with pytest.raises(TaskInputError) as exc:
        sudoku.parse([[99] * 9] * 9)
    assert len(exc.value.errors) == MAX_ERRORS
    assert exc.value.num_more == 81 - MAX_ERRORS
    assert f"and {81 - 5} more problem(s)" in str(exc.value)


def test_loc_prefix_follows_the_request_path():
    with pytest.raises(TaskInputError) as exc:
        sudoku.parse("." * 80 + "x", loc=("puzzles", 4))
    assert exc.value.loc == ("puzzles", 4, 80)
    assert "row 8, column 8" in exc.value.errors[0][1]
