"""Maze codec: parse a user maze, encode it as the original builder's tokens, decode, rule check.

Token layout is exactly the original `dataset/build_maze_dataset.py`: the charset "# SGo" maps
to ids 1..5 (wall 1, open 2, start 3, goal 4, path 5), PAD 0, vocab 6, cells row-major.
The paper's Maze-Hard grids are 30x30 (seq 900); a model may be trained on another size, so
`parse`/`decode` take `height`/`width` (default 30) and the service passes the model's.

Grid form used everywhere in trm-serve: a list of equal-length strings over "# SGo". An answer
is the maze with the cells of one S->G path marked 'o' (S and G stay). Rows and columns are
counted from 0 (see `errors.py`).

Rule check vs optimality. `verify` returns *rule violations* only: the answer must keep the
maze, and its 'o' cells must form one simple route from S to G through open cells (no stray,
dead-end or branching path cells). Whether the route is a *shortest* one is a separate question, answered by
`is_shortest` (the training labels are shortest paths, so exact-match accuracy needs it, but a
longer valid route is still a solution of the maze).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from .errors import ErrorList, Loc, TaskInputError, row_problem

__all__ = [
    "CHARSET", "DEFAULT_SIZE", "VOCAB_SIZE", "PAD", "Grid", "Cell",
    "parse", "encode", "decode", "verify", "is_shortest", "shortest_path", "shortest_path_length",
    "find_cells", "mark_path",
]

CHARSET = "# SGo"  # token id = index + 1
DEFAULT_SIZE = 30
VOCAB_SIZE = len(CHARSET) + 1
PAD = 0
WALL, OPEN, START, GOAL, PATH = CHARSET
_TOKEN = {ch: i + 1 for i, ch in enumerate(CHARSET)}
_UNKNOWN = "?"  # what decode writes for a PAD token; verify reports it
_CELL_HELP = "use '#' wall, ' ' open, 'S' start, 'G' goal, 'o' path"

Grid = list[str]
Cell = tuple[int, int]
MAX_VIOLATIONS = 30


def parse(obj: Any, *, height: int = DEFAULT_SIZE, width: int = DEFAULT_SIZE, loc: Loc = ("puzzle",)) -> Grid:
    """Validate a user maze and return it as `height` strings of `width` chars over "# SGo".

    Accepts a list of row strings, a list of rows of token ids 1-5 (1 '#', 2 ' ', 3 'S', 4 'G',
    5 'o'), a single string of rows separated by newlines, or one row-major string of
    height*width chars (the CSV form). Exactly one 'S' and one 'G' are required. Raises
    `TaskInputError` naming each problem (row, column, value).
    """
    rows = _rows_of(obj, height, width, loc)
    grid = _check_cells(rows, height, width, loc)
    errors = ErrorList()
    for ch, name in ((START, "start"), (GOAL, "goal")):
        cells = find_cells(grid, ch)
        if not cells:
            errors.add(loc, f"maze has no {name} {ch!r}; expected exactly one")
        elif len(cells) > 1:
            where = ", ".join(f"row {r}, column {c}" for r, c in cells)
            errors.add((*loc, *cells[1]), f"maze has {len(cells)} {name} cells {ch!r} (at {where}); "
                                          "expected exactly one")
    errors.raise_if_any()
    return grid


def _rows_of(obj: Any, height: int, width: int, loc: Loc) -> list[Any]:
    """Split the accepted input forms into a list of rows and check the row count."""
    if isinstance(obj, str):
        if "\n" in obj:
            obj = obj.rstrip("\n").split("\n")
        elif len(obj) == height * width:
            obj = [obj[r * width:(r + 1) * width] for r in range(height)]
        else:
            raise TaskInputError.single(
                loc, f"maze string has {len(obj)} characters; expected {height * width} "
                     f"({height}x{width} row-major) or rows separated by newlines")
    if not isinstance(obj, (list, tuple)):
        raise TaskInputError.single(loc, f"maze must be a list of row strings; got {type(obj).__name__}")
    if len(obj) == 0:
        raise TaskInputError.single(loc, f"maze is empty; expected {height} rows of {width} cells")
    if len(obj) != height:
        raise TaskInputError.single(loc, f"maze has {len(obj)} rows; expected {height} "
                                         f"(this model works on {height}x{width} mazes)")
    return list(obj)


def _check_cells(rows: list[Any], height: int, width: int, loc: Loc) -> Grid:
    errors = ErrorList()
    grid: Grid = []
    for r, row in enumerate(rows):
        problem = row_problem(row, r, width, (str, list, tuple), "a string or a list of cells")
        if problem:
            errors.add((*loc, r), problem)
            continue
        chars = []
        for c, v in enumerate(row):
            if isinstance(v, str) and len(v) == 1 and v in _TOKEN:
                chars.append(v)
            elif isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= len(CHARSET):
                chars.append(CHARSET[v - 1])
            elif isinstance(v, int) and not isinstance(v, bool):
                errors.add((*loc, r, c), f"row {r}, column {c}: value {v} is out of range 1-5 "
                                         "(1 '#', 2 ' ', 3 'S', 4 'G', 5 'o')")
            else:
                errors.add((*loc, r, c), f"row {r}, column {c}: {v!r} is not a maze cell ({_CELL_HELP})")
        grid.append("".join(chars))
    errors.raise_if_any()
    return grid


def encode(grid: Grid) -> list[int]:
    """Grid -> height*width token ids ('#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5), row-major."""
    return [_TOKEN[ch] for row in grid for ch in row]


def decode(tokens: Sequence[int] | Any, *, height: int | None = None, width: int | None = None) -> Grid:
    """Token ids -> grid. Without `height`/`width` the grid is taken to be square.

    A PAD token (0) decodes to '?' so a model output with padding stays visible and `verify`
    reports the cell instead of the decoder crashing.
    """
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    tokens = list(tokens)
    n = len(tokens)
    if height is None and width is None:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"maze.decode got {n} tokens, not a square grid; pass height= and width=")
        height = width = side
    elif height is None or width is None:
        height = height if height is not None else n // width  # type: ignore[operator]
        width = width if width is not None else n // height
    if height * width != n:
        raise ValueError(f"maze.decode got {n} tokens; expected {height}x{width} = {height * width}")
    bad = [t for t in tokens if not 0 <= t < VOCAB_SIZE]
    if bad:
        raise ValueError(f"maze.decode got token {bad[0]} outside the vocabulary 0-{VOCAB_SIZE - 1}")
    chars = "".join(_UNKNOWN if t == PAD else CHARSET[t - 1] for t in tokens)
    return [chars[r * width:(r + 1) * width] for r in range(height)]


def find_cells(grid: Grid, ch: str) -> list[Cell]:
    """All (row, column) positions holding `ch`, in row-major order."""
    return [(r, c) for r, row in enumerate(grid) for c, x in enumerate(row) if x == ch]


def _neighbours(r: int, c: int, height: int, width: int):
    if r > 0:
        yield r - 1, c
    if r + 1 < height:
        yield r + 1, c
    if c > 0:
        yield r, c - 1
    if c + 1 < width:
        yield r, c + 1


def _search(puzzle: Grid) -> tuple[Cell, Cell, dict[Cell, Cell | None], dict[Cell, int]]:
    """Breadth-first search from S through non-wall cells, neighbours in the fixed order (up, down,
    left, right), stopped once G is dequeued: (start, goal, parent, distance). Every cell closer to S
    than G is in both maps by then; G is missing from them when it cannot be reached."""
    height, width = len(puzzle), len(puzzle[0])
    (start,), (goal,) = find_cells(puzzle, START), find_cells(puzzle, GOAL)
    parent: dict[Cell, Cell | None] = {start: None}
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for nb in _neighbours(*cell, height, width):
            if nb not in parent and puzzle[nb[0]][nb[1]] != WALL:
                parent[nb], dist[nb] = cell, dist[cell] + 1
                queue.append(nb)
    return start, goal, parent, dist


def shortest_path(puzzle: Grid) -> list[Cell] | None:
    """One shortest S->G route through non-wall cells (breadth-first search), S and G included.

    None when G cannot be reached. Ties are broken by the fixed neighbour order (up, down,
    left, right), so the result is deterministic.
    """
    _, goal, parent, _ = _search(puzzle)
    if goal not in parent:
        return None
    path = [goal]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def canonical_shortest_path(puzzle: Grid) -> list[Cell] | None:
    """The shortest S->G route a model can learn to name: a function of the maze as it is seen.

    Most mazes have several shortest routes. `shortest_path` picks one by its search order, and a
    rotated or mirrored copy of the maze gets that route rotated with it, which is not the route the
    same rule picks on the copy: trained on such labels a model is asked for an arbitrary choice it
    cannot see, and learns a blend of routes that is no route at all. Here the choice is local and
    follows the grid as given: from G, step to the first neighbour (up, down, left, right) that is
    one move closer to S, until S. S and G included; None when G cannot be reached.
    """
    start, goal, _, dist = _search(puzzle)
    if goal not in dist:
        return None
    height, width = len(puzzle), len(puzzle[0])
    path = [goal]
    while path[-1] != start:
        here = dist[path[-1]]
        path.append(next(nb for nb in _neighbours(*path[-1], height, width) if dist.get(nb) == here - 1))
    return path[::-1]


def shortest_path_length(puzzle: Grid) -> int | None:
    """Number of moves of a shortest S->G route (the path then marks `moves - 1` cells 'o');
    None when G cannot be reached."""
    path = shortest_path(puzzle)
    return None if path is None else len(path) - 1


def mark_path(puzzle: Grid, path: Sequence[Cell]) -> Grid:
    """The answer form: `puzzle` with every open cell of `path` set to 'o' (S and G kept)."""
    rows = [list(row) for row in puzzle]
    for r, c in path:
        if rows[r][c] == OPEN:
            rows[r][c] = PATH
    return ["".join(row) for row in rows]


def verify(puzzle: Grid, answer: Grid) -> list[str]:
    """Rule violations of `answer` as a solution of `puzzle`; [] means a valid route.

    Reports: wrong shape or characters; a wall, S or G changed (a path through a wall is
    reported as such); 'o' cells that do not connect S to G, stray path cells not on the route,
    dead-end path cells, and path cells that branch or touch S or G twice. So no violations means
    the 'o' cells with S and G are exactly one simple 4-connected S-G path through open cells. A
    valid but longer-than-shortest route is NOT a violation; see `is_shortest`.
    """
    height, width = len(puzzle), len(puzzle[0])
    try:
        answer = _check_cells(_rows_of(answer, height, width, ("answer",)), height, width, ("answer",))
    except TaskInputError as e:
        return [msg for _, msg in e.errors]
    violations: list[str] = []
    on_route: set[Cell] = set()  # cells a route may use: path cells on open cells, plus S and G
    for r in range(height):
        for c in range(width):
            given, got = puzzle[r][c], answer[r][c]
            if got == PATH and given in (OPEN, PATH):
                on_route.add((r, c))
            elif got == PATH and given == WALL:
                violations.append(f"row {r}, column {c}: the path goes through a wall")
            elif got == given:
                if given in (START, GOAL):
                    on_route.add((r, c))
            elif given in (WALL, START, GOAL) or got in (WALL, START, GOAL):
                violations.append(f"row {r}, column {c}: {_name(given)} was changed to {_name(got)}")
    violations += _route_violations(puzzle, on_route, height, width)
    if len(violations) > MAX_VIOLATIONS:
        extra = len(violations) - MAX_VIOLATIONS
        violations = violations[:MAX_VIOLATIONS] + [f"and {extra} more violations"]
    return violations


def _name(ch: str) -> str:
    return {WALL: "wall '#'", OPEN: "open cell ' '", START: "start 'S'", GOAL: "goal 'G'",
            PATH: "path 'o'"}.get(ch, f"{ch!r}")


def _route_violations(puzzle: Grid, on_route: set[Cell], height: int, width: int) -> list[str]:
    """Connectivity of the path cells: S reaches G, nothing stray, no dead ends."""
    starts, goals = find_cells(puzzle, START), find_cells(puzzle, GOAL)
    if len(starts) != 1 or len(goals) != 1:
        return ["the puzzle must have exactly one start 'S' and one goal 'G'"]
    start, goal = starts[0], goals[0]
    seen = {start} if start in on_route else set()
    queue = deque(seen)
    while queue:
        cell = queue.popleft()
        for nb in _neighbours(*cell, height, width):
            if nb in on_route and nb not in seen:
                seen.add(nb)
                queue.append(nb)
    out: list[str] = []
    if goal not in seen:
        out.append(f"the path does not connect the start (row {start[0]}, column {start[1]}) "
                   f"to the goal (row {goal[0]}, column {goal[1]})")
    for r, c in sorted(on_route - {start, goal}):
        degree = sum(nb in on_route for nb in _neighbours(r, c, height, width))
        if (r, c) not in seen:
            out.append(f"row {r}, column {c}: path cell is not connected to the start")
        elif degree < 2:
            out.append(f"row {r}, column {c}: path cell is a dead end")
        elif degree > 2:
            out.append(f"row {r}, column {c}: the path branches here ({degree} neighbouring path cells; "
                       "a path cell has 2)")
    for (r, c), name in ((start, "start"), (goal, "goal")):
        degree = sum(nb in on_route for nb in _neighbours(r, c, height, width))
        if degree > 1:
            out.append(f"row {r}, column {c}: the path touches the {name} {degree} times; it leaves the "
                       f"{name} once")
    return out


def is_shortest(puzzle: Grid, answer: Grid) -> bool:
    """True when `answer` is a valid route (no `verify` violations) of shortest length.

    A connected S->G set of k path cells is a route of at least shortest-1 cells; with exactly
    that many it is a shortest path, so counting cells suffices once `verify` passes.
    """
    if verify(puzzle, answer):
        return False
    moves = shortest_path_length(puzzle)
    num_path = sum(row.count(PATH) for row in answer)
    return moves is not None and num_path == moves - 1
