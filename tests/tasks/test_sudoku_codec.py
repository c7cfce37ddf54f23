from __future__ import annotations

import random

import pytest

from tests.conftest import require_shared
from tests.tasks.shared_data import SHARED, SUDOKU_DIR, sudoku_rows
from trm_core.tasks import TaskInputError, sudoku

# Row counts from ../shared/data/README.md
README_COUNTS = {
    "forum_hardest_1905_11plus_train_1k.csv": 1000,
    "forum_hardest_1905_11plus_test.csv.gz": 45766,
    "magictour_top1465.csv": 1465,
    "forum_hardest_1106.csv": 375,
    "all_17_clue.csv.gz": 49158,
}


def test_readme_lists_every_file():
    assert {p.name for p in require_shared(SUDOKU_DIR, "the Sudoku data sets").iterdir() if p.suffix in (".csv", ".gz")} == set(README_COUNTS)


@pytest.mark.parametrize("name", sorted(README_COUNTS))
def test_every_real_puzzle_parses_and_every_answer_verifies(name):
    rows = sudoku_rows(name)
    assert len(rows) == README_COUNTS[name]
    for q, a in rows:
        puzzle = sudoku.parse(q)
        answer = sudoku.parse(a)
        assert sudoku.verify(puzzle, answer) == [], (q, a)
        assert sudoku.find_conflicts(puzzle) == []
    # the string form round-trips for a few (all is covered by parse being exact)
    assert sudoku.to_string(sudoku.parse(rows[0][0])) == rows[0][0].replace("0", ".")


def test_tokens_equal_the_original_builders_golden_fixture():
    safetensors_torch = pytest.importorskip("safetensors.torch")
    golden = safetensors_torch.load_file(str(require_shared(SHARED / "fixtures" / "sudoku_mlp_t.golden.safetensors", "a golden fixture")))
    rows = sudoku_rows("forum_hardest_1905_11plus_train_1k.csv", 3)  # the fixture's three puzzles
    inputs = [sudoku.encode(sudoku.parse(q)) for q, _ in rows]
    labels = [sudoku.encode(sudoku.parse(a)) for _, a in rows]
    assert golden["inputs"].tolist() == inputs
    assert golden["labels"].tolist() == labels


def test_encode_decode_round_trip_and_pad_decodes_to_blank():
    q, a = sudoku_rows("magictour_top1465.csv", 1)[0]
    for text in (q, a):
        grid = sudoku.parse(text)
        tokens = sudoku.encode(grid)
        assert len(tokens) == 81 and all(1 <= t <= 10 for t in tokens)
        assert sudoku.decode(tokens) == grid
    tokens = sudoku.encode(sudoku.parse(a))
    tokens[5] = sudoku.PAD
    decoded = sudoku.decode(tokens)
    assert decoded[0][5] == 0
    assert "row 0, column 5: cell left blank" in sudoku.verify(sudoku.parse(q), decoded)


def test_decode_accepts_tensors_and_rejects_wrong_length():
    torch = pytest.importorskip("torch")
    a = sudoku_rows("magictour_top1465.csv", 1)[0][1]
    grid = sudoku.parse(a)
    assert sudoku.decode(torch.tensor(sudoku.encode(grid))) == grid
    with pytest.raises(ValueError, match="got 80 tokens; expected 81"):
        sudoku.decode([2] * 80)
    with pytest.raises(ValueError, match="token 11 outside"):
        sudoku.decode([11] * 81)


def test_nested_list_form_with_zero_or_null_blanks():
    q, _ = sudoku_rows("magictour_top1465.csv", 1)[0]
    grid = sudoku.parse(q)
    with_nulls = [[v or None for v in row] for row in grid]
    assert sudoku.parse(with_nulls) == grid
    assert sudoku.parse(q.replace(".", "0")) == grid


def _real_pairs(n=20):
    pairs = sudoku_rows("forum_hardest_1905_11plus_train_1k.csv", n) + sudoku_rows("all_17_clue.csv.gz", n)
    return [(sudoku.parse(q), sudoku.parse(a)) for q, a in pairs]


def _blank_cells(puzzle):
    return [(r, c) for r in range(9) for c in range(9) if puzzle[r][c] == 0]


def test_changed_given_is_caught():
    for puzzle, answer in _real_pairs():
        # swapping two rows inside a band keeps every row, column and box valid: only givens break
        bad = [row[:] for row in answer]
        bad[0], bad[1] = bad[1], bad[0]
        violations = sudoku.verify(puzzle, bad)
        assert violations and all("given" in v and "was changed to" in v for v in violations)
        r, c = next((r, c) for r in range(2) for c in range(9) if puzzle[r][c])
        assert f"row {r}, column {c}: given {puzzle[r][c]} was changed to {bad[r][c]}" in violations


@pytest.mark.parametrize("unit", ["row", "column", "box"])
def test_repeated_digit_in_each_unit_is_caught(unit):
    rng = random.Random(0)
    for puzzle, answer in _real_pairs():
        r, c = rng.choice(_blank_cells(puzzle))
        if unit == "row":
            r2, c2 = r, (c + 1 + rng.randrange(8)) % 9
        elif unit == "column":
            r2, c2 = (r + 1 + rng.randrange(8)) % 9, c
        else:
            r2, c2 = r // 3 * 3 + (r % 3 + 1) % 3, c // 3 * 3 + (c % 3 + 1) % 3
        bad = [row[:] for row in answer]
        bad[r][c] = answer[r2][c2]
        index = {"row": r, "column": c, "box": r // 3 * 3 + c // 3}[unit]
        expected = f"{unit} {index}: digit {answer[r2][c2]} appears 2 times"
        assert any(v.startswith(expected) for v in sudoku.verify(puzzle, bad)), (unit, r, c)


def test_blank_cell_is_caught_and_nothing_else():
    for puzzle, answer in _real_pairs():
        r, c = _blank_cells(puzzle)[0]
        bad = [row[:] for row in answer]
        bad[r][c] = 0
        assert sudoku.verify(puzzle, bad) == [f"row {r}, column {c}: cell left blank"]


def test_empty_answer_violations_are_capped():
    puzzle, _ = _real_pairs(1)[0]
    violations = sudoku.verify(puzzle, [[0] * 9 for _ in range(9)])
    assert len(violations) == sudoku.MAX_VIOLATIONS + 1 and violations[-1].startswith("and ")


def test_malformed_answer_is_reported_not_raised():
    puzzle, _ = _real_pairs(1)[0]
    assert sudoku.verify(puzzle, [[1] * 9] * 8) == ["puzzle has 8 rows; expected 9"]


def test_conflicting_givens_are_found_in_a_puzzle():
    grid = sudoku.parse("55" + "." * 79)
    assert sudoku.find_conflicts(grid) == [
        "row 0: digit 5 appears 2 times, at (row 0, column 0), (row 0, column 1)",
        "box 0: digit 5 appears 2 times, at (row 0, column 0), (row 0, column 1)",
    ]


@pytest.mark.parametrize("obj, loc, message", [
    ("." * 80, ("puzzle",), "puzzle string has 80 characters; expected 81"),
    ("." * 82, ("puzzle",), "puzzle string has 82 characters; expected 81"),
    ("." * 40 + "x" + "." * 40, ("puzzle", 40), "character 40 (row 4, column 4): 'x' is not a digit"),
    ({"grid": 1}, ("puzzle",), "puzzle must be an 81-character string or a 9x9 list of lists; got dict"),
    (123, ("puzzle",), "got int"),
    (None, ("puzzle",), "got NoneType"),
    ([], ("puzzle",), "puzzle has 0 rows; expected 9"),
    ([[0] * 9] * 8, ("puzzle",), "puzzle has 8 rows; expected 9"),
    ([[0] * 9] * 4 + [[0] * 8] + [[0] * 9] * 4, ("puzzle", 4), "row 4 has 8 cells; expected 9"),
    ([[0] * 9] * 4 + ["000000000"] + [[0] * 9] * 4, ("puzzle", 4), "row 4 must be a list of 9 cells; got str"),
    ([[0] * 9] * 3 + [[0, 0, 0, 0, 0, 12, 0, 0, 0]] + [[0] * 9] * 5, ("puzzle", 3, 5),
     "row 3, column 5: value 12 is out of range 0-9"),
    ([[0] * 9] * 8 + [[0] * 8 + [-1]], ("puzzle", 8, 8), "row 8, column 8: value -1 is out of range 0-9"),
    ([[0] * 9] * 8 + [[0] * 8 + [3.0]], ("puzzle", 8, 8), "row 8, column 8: 3.0 is not an integer"),
    ([[0] * 9] * 8 + [[0] * 8 + [True]], ("puzzle", 8, 8), "row 8, column 8: True is not an integer"),
    ([[0] * 9] * 8 + [[0] * 8 + ["5"]], ("puzzle", 8, 8), "row 8, column 8: '5' is not an integer"),
])
def test_malformed_puzzles_name_the_problem(obj, loc, message):
    with pytest.raises(TaskInputError) as exc:
        sudoku.parse(obj)
    assert exc.value.loc == loc
    assert message in str(exc.value)
