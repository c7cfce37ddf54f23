"""The one exception every task codec raises for bad user input.

`TaskInputError` carries machine-readable locations so the HTTP layer can build RFC 9457
problem+json `errors: [{"loc": [...], "msg": "..."}]` without parsing message text.

Locations are JSON paths into the request body, with list indices counted from 0 exactly as
the JSON arrays are (pydantic's convention): `("puzzle", 3, 5)` is row 3, column 5 of the
puzzle, `("task", "test", 0, "input", 2, 7)` a cell of the first test input of an ARC task.
Messages use the same 0-based numbers, so a message and its `loc` never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Loc", "TaskInputError", "ErrorList", "row_problem"]

Loc = tuple[str | int, ...]

# A grid with many bad cells would otherwise produce hundreds of entries; the first few are
# enough to show the user what is wrong, the count says how much more there is.
MAX_ERRORS = 20


class TaskInputError(ValueError):
    """A puzzle, answer or task that cannot be used as given.

    Attributes:
        errors: every problem found, as `(loc, msg)` pairs (at most `MAX_ERRORS`).
        loc: the location of the first problem (same as `errors[0][0]`).
    """

    def __init__(self, errors: Sequence[tuple[Loc, str]], *, num_more: int = 0) -> None:
        if not errors:
            raise ValueError("TaskInputError needs at least one (loc, msg) pair")
        self.errors: list[tuple[Loc, str]] = [(tuple(loc), str(msg)) for loc, msg in errors]
        self.loc: Loc = self.errors[0][0]
        self.num_more = num_more
        text = "; ".join(msg for _, msg in self.errors[:5])
        hidden = len(self.errors) - 5 + num_more
        if hidden > 0:
            text += f"; and {hidden} more problem(s)"
        super().__init__(text)

    @classmethod
    def single(cls, loc: Loc, msg: str) -> TaskInputError:
        """One problem; the common case for structural errors (wrong type, wrong shape)."""
        return cls([(loc, msg)])


class ErrorList:
    """Collects cell-level problems so one request reports all of them (capped), not only the first."""

    def __init__(self) -> None:
        self.errors: list[tuple[Loc, str]] = []
        self.num_more = 0

    def add(self, loc: Loc, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((tuple(loc), msg))
        else:
            self.num_more += 1

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise TaskInputError(self.errors, num_more=self.num_more)


def row_problem(row: object, r: int, width: int, kinds: tuple[type, ...], what: str) -> str | None:
    """Why `row` (row `r` of a grid) is not `width` cells of one of `kinds`; None when it is."""
    if not isinstance(row, kinds):
        return f"row {r} must be {what}; got {type(row).__name__}"
    if len(row) != width:  # type: ignore[arg-type]
        return f"row {r} has {len(row)} cells; expected {width}"  # type: ignore[arg-type]
    return None
