from __future__ import annotations

import numpy as np
import pytest

from training.data.maze_gen import MazeGenConfig, generate_split
from trm_core.tasks import TaskInputError, maze
from trm_core.tasks.augment import dihedral_rows


@pytest.fixture(scope="module")
def mazes():
    """Ten 30x30 Maze-Hard-like mazes (our generator; there is no offline copy of Maze-Hard)."""
    made = generate_split(MazeGenConfig(), 10, np.random.default_rng(123))
    return [(maze.parse(m.question), maze.parse(m.answer)) for m in made]


# a hand-made 5x5 maze (spaces shown as '.', replaced below): the short way is down the left column
SMALL = [row.replace(".", " ") for row in ["S....", ".###.", ".###.", ".###.", "G...."]]
SMALL_SHORT = [row.replace(".", " ") for row in ["S....", "o###.", "o###.", "o###.", "G...."]]
SMALL_LONG = [row.replace(".", " ") for row in ["Soooo", ".###o", ".###o", ".###o", "Goooo"]]


def test_generated_answers_verify_and_are_shortest(mazes):
    for puzzle, answer in mazes:
        assert maze.verify(puzzle, answer) == []
        assert maze.is_shortest(puzzle, answer)
        assert maze.shortest_path_length(puzzle) >= 111
        # the codec's own BFS may break ties differently from the generator; both are shortest
        assert maze.is_shortest(puzzle, maze.mark_path(puzzle, maze.shortest_path(puzzle)))


def test_tokens_follow_the_original_charset(mazes):
    puzzle, answer = mazes[0]
    tokens = maze.encode(answer)
    assert len(tokens) == 900
    flat = "".join(answer)
    assert all(t == "# SGo".index(ch) + 1 for t, ch in zip(tokens, flat, strict=True))
    assert maze.decode(tokens) == answer
    assert maze.decode(maze.encode(puzzle)) == puzzle


def test_all_input_forms_parse_to_the_same_grid(mazes):
    puzzle, _ = mazes[0]
    assert maze.parse("".join(puzzle)) == puzzle  # the CSV form
    assert maze.parse("\n".join(puzzle) + "\n") == puzzle
    assert maze.parse([["# SGo".index(ch) + 1 for ch in row] for row in puzzle]) == puzzle  # token ids
    assert maze.parse([list(row) for row in puzzle]) == puzzle


def test_other_grid_sizes_follow_the_model_config():
    assert maze.parse(SMALL, height=5, width=5) == SMALL
    assert maze.decode(maze.encode(SMALL)) == SMALL  # square: size inferred
    wide = ["S  #    ", "   #   G"]
    assert maze.decode(maze.encode(wide), height=2, width=8) == wide
    with pytest.raises(TaskInputError, match="maze has 5 rows; expected 30"):
        maze.parse(SMALL)
    with pytest.raises(ValueError, match="not a square grid"):
        maze.decode([2] * 10)


def test_pad_tokens_decode_visibly_and_are_reported(mazes):
    puzzle, answer = mazes[0]
    tokens = maze.encode(answer)
    tokens[31] = maze.PAD
    decoded = maze.decode(tokens)
    assert decoded[1][1] == "?"
    assert "row 1, column 1: '?' is not a maze cell" in maze.verify(puzzle, decoded)[0]


def test_longer_route_is_valid_but_not_shortest():
    assert maze.verify(SMALL, SMALL_SHORT) == [] and maze.is_shortest(SMALL, SMALL_SHORT)
    assert maze.verify(SMALL, SMALL_LONG) == []
    assert not maze.is_shortest(SMALL, SMALL_LONG)
    assert maze.shortest_path_length(SMALL) == 4


def _set(grid, r, c, ch):
    rows = [list(row) for row in grid]
    rows[r][c] = ch
    return ["".join(row) for row in rows]


def _path_cells(answer):
    return maze.find_cells(answer, maze.PATH)


def test_path_through_a_wall_is_caught(mazes):
    for puzzle, answer in mazes:
        r, c = maze.find_cells(puzzle, maze.WALL)[0]
        violations = maze.verify(puzzle, _set(answer, r, c, maze.PATH))
        assert f"row {r}, column {c}: the path goes through a wall" in violations


def test_gap_in_the_path_is_caught(mazes):
    for puzzle, answer in mazes:
        r, c = _path_cells(answer)[len(_path_cells(answer)) // 2]
        violations = maze.verify(puzzle, _set(answer, r, c, maze.OPEN))
        assert any(v.startswith("the path does not connect the start") for v in violations)
        assert not maze.is_shortest(puzzle, _set(answer, r, c, maze.OPEN))


def test_stray_and_dead_end_path_cells_are_caught(mazes):
    for puzzle, answer in mazes:
        path = set(_path_cells(answer)) | set(maze.find_cells(answer, maze.START)) | \
            set(maze.find_cells(answer, maze.GOAL))
        opens = maze.find_cells(answer, maze.OPEN)
        stray = next(cell for cell in opens if all(abs(cell[0] - r) + abs(cell[1] - c) > 1 for r, c in path))
        violations = maze.verify(puzzle, _set(answer, *stray, maze.PATH))
        assert violations == [f"row {stray[0]}, column {stray[1]}: path cell is not connected to the start"]
        spur = next(cell for cell in opens if sum(abs(cell[0] - r) + abs(cell[1] - c) == 1 for r, c in path) == 1)
        violations = maze.verify(puzzle, _set(answer, *spur, maze.PATH))
        assert f"row {spur[0]}, column {spur[1]}: path cell is a dead end" in violations



def test_a_valid_answer_is_one_simple_path_not_a_blob():
    """Extra 'o' cells next to the route (a 2x2 block, a second touch of S) have no dead end but are
    not a path: `valid` must mean the 'o' cells are exactly one simple S-G path."""
    puzzle = ["S  G", "    ", "    "]
    assert maze.verify(puzzle, ["SooG", "    ", "    "]) == []
    blob = maze.verify(puzzle, ["SooG", " oo ", "    "])
    assert "row 0, column 1: the path branches here (3 neighbouring path cells; a path cell has 2)" in blob
    assert not maze.is_shortest(puzzle, ["SooG", " oo ", "    "])
    loop = maze.verify(puzzle, ["SooG", "oo  ", "    "])  # o below S joins the route: S touched twice
    assert "row 0, column 0: the path touches the start 2 times; it leaves the start once" in loop

def test_changed_walls_start_and_goal_are_caught(mazes):
    puzzle, answer = mazes[0]
    r, c = maze.find_cells(puzzle, maze.WALL)[0]
    assert f"row {r}, column {c}: wall '#' was changed to open cell ' '" in maze.verify(
        puzzle, _set(answer, r, c, maze.OPEN))
    (sr, sc), = maze.find_cells(puzzle, maze.START)
    violations = maze.verify(puzzle, _set(answer, sr, sc, maze.PATH))
    assert f"row {sr}, column {sc}: start 'S' was changed to path 'o'" in violations
    (gr, gc), = maze.find_cells(puzzle, maze.GOAL)
    assert f"row {gr}, column {gc}: goal 'G' was changed to open cell ' '" in maze.verify(
        puzzle, _set(answer, gr, gc, maze.OPEN))
    assert maze.verify(puzzle, answer[:-1]) == ["maze has 29 rows; expected 30 (this model works on 30x30 mazes)"]


def test_answer_without_a_path_is_caught(mazes):
    puzzle, _ = mazes[0]
    assert maze.verify(puzzle, puzzle)[0].startswith("the path does not connect the start (row")


ROW = " " * 30


def _grid(*edits):
    rows = [list(ROW) for _ in range(30)]
    rows[0][0], rows[29][29] = "S", "G"
    for r, c, v in edits:
        rows[r][c] = v
    return ["".join(row) for row in rows]


@pytest.mark.parametrize("obj, loc, message", [
    ({"rows": []}, ("puzzle",), "maze must be a list of row strings; got dict"),
    (7, ("puzzle",), "got int"),
    ([], ("puzzle",), "maze is empty; expected 30 rows of 30 cells"),
    ("S G", ("puzzle",), "maze string has 3 characters; expected 900 (30x30 row-major)"),
    (_grid()[:29], ("puzzle",), "maze has 29 rows; expected 30"),
    (_grid()[:29] + [ROW[:29]], ("puzzle", 29), "row 29 has 29 cells; expected 30"),
    (_grid()[:29] + [None], ("puzzle", 29), "row 29 must be a string or a list of cells; got NoneType"),
    (_grid((3, 5, "x")), ("puzzle", 3, 5), "row 3, column 5: 'x' is not a maze cell"),
    (_grid((3, 5, ".")), ("puzzle", 3, 5), "row 3, column 5: '.' is not a maze cell"),
    (_grid((0, 1, "S")), ("puzzle", 0, 1), "maze has 2 start cells 'S' (at row 0, column 0, row 0, column 1)"),
    (_grid((29, 29, " ")), ("puzzle",), "maze has no goal 'G'; expected exactly one"),
    (_grid((0, 0, " ")), ("puzzle",), "maze has no start 'S'; expected exactly one"),
    ([[2] * 30] * 29 + [[2] * 29 + [9]], ("puzzle", 29, 29), "row 29, column 29: value 9 is out of range 1-5"),
    ([[2] * 30] * 29 + [[2] * 29 + [True]], ("puzzle", 29, 29), "row 29, column 29: True is not a maze cell"),
])
def test_malformed_mazes_name_the_problem(obj, loc, message):
    with pytest.raises(TaskInputError) as exc:
        maze.parse(obj)
    assert exc.value.loc == loc
    assert message in str(exc.value)


OPEN_3X3 = ["S  ", "   ", "  G"]  # six shortest routes, and the same maze under a transpose


def test_canonical_route_is_a_function_of_the_maze_as_seen():
    """From G it steps to the first neighbour (up, down, left, right) one move closer to S, so a maze
    that looks the same turned gets the same route, where the search-order route does not."""
    assert maze.canonical_shortest_path(OPEN_3X3) == [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]
    turned = dihedral_rows(OPEN_3X3, 6)  # the transpose: the same grid
    assert turned == OPEN_3X3
    bfs_turned = [(c, r) for r, c in maze.shortest_path(OPEN_3X3)]
    assert bfs_turned != maze.shortest_path(turned)  # the search-order route, turned, is another route
    assert maze.canonical_shortest_path(_set(_set(OPEN_3X3, 1, 2, maze.WALL), 2, 1, maze.WALL)) is None


def test_canonical_route_is_shortest_on_real_mazes(mazes):
    differs = 0
    for puzzle, _ in mazes:
        route = maze.canonical_shortest_path(puzzle)
        answer = maze.mark_path(puzzle, route)
        assert maze.verify(puzzle, answer) == [] and maze.is_shortest(puzzle, answer)
        differs += route != maze.shortest_path(puzzle)
    assert differs  # a real choice among several shortest routes, not the search order again
