from __future__ import annotations

import pytest

from trm_core.tasks import TASK_NAMES, TaskInputError, arc, get_codec, maze, sudoku
from trm_core.tasks.errors import MAX_ERRORS


def test_registry_returns_each_codec_and_names_unknown_tasks():
    assert get_codec("sudoku") is sudoku and get_codec("maze") is maze and get_codec("arc") is arc
    assert set(TASK_NAMES) == {"sudoku", "maze", "arc"}
    with pytest.raises(ValueError, match="unknown task 'chess'.*sudoku, maze, arc"):
        get_codec("chess")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_codec_has_the_same_four_functions(name):
    codec = get_codec(name)
    for fn in ("parse", "encode", "decode", "verify"):
        assert callable(getattr(codec, fn))


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
