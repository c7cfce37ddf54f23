"""Request and response bodies of the HTTP API (docs/ARCHITECTURE.md "HTTP contract"), one model per direction.

Puzzles and tasks are typed loosely here on purpose (any JSON, with an explicit OpenAPI schema): the
task codecs (trm_core.tasks) validate them and name the offending row, column and value, which
pydantic's union errors cannot do. Everything else is strict: unknown fields are refused
(`extra="forbid"`), so nothing a client sends is silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from trm_core.halting import HALTING_MODES

HaltingMode = Literal[HALTING_MODES]  # the option's values are trm_core.halting's modes, in its order
HaltReason = Literal["learned", "verified", "budget", "stalled"]

_SUDOKU_SCHEMA = {
    "oneOf": [
        {"type": "string", "minLength": 81, "maxLength": 81,
         "description": "81 characters row-major: '1'-'9' givens, '.' or '0' blank"},
        {"type": "array", "minItems": 9, "maxItems": 9,
         "items": {"type": "array", "minItems": 9, "maxItems": 9,
                   "items": {"type": ["integer", "null"], "minimum": 0, "maximum": 9}},
         "description": "9 rows of 9 ints, 0 or null blank"},
    ],
    "example": "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..",
}
_MAZE_SCHEMA = {
    "oneOf": [
        {"type": "array", "items": {"type": "string"},
         "description": "rows over '#' wall, ' ' open, 'S' start, 'G' goal (the model's size, 30x30 for Maze-Hard)"},
        {"type": "string", "description": "rows separated by newlines, or one row-major string"},
    ],
}
_GRID_SCHEMA = {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}},
                "description": "rows of colours 0-9, 1..30 on each side"}
_ARC_TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "train": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
            "input": _GRID_SCHEMA, "output": _GRID_SCHEMA}, "required": ["input", "output"]}},
        "test": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {"input": _GRID_SCHEMA},
                                            "required": ["input"]}},
    },
    "required": ["train", "test"],
    "description": "an ARC task in the standard JSON form; it must be one the model was trained on",
}

SudokuPuzzle = Annotated[Any, WithJsonSchema(_SUDOKU_SCHEMA)]
MazePuzzle = Annotated[Any, WithJsonSchema(_MAZE_SCHEMA)]
ArcTaskJson = Annotated[Any, WithJsonSchema(_ARC_TASK_SCHEMA)]


# ---- sent by clients ---------------------------------------------------------------------------
class SolveOptions(BaseModel):
    """Options shared by every solve request."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="model name (GET /v1/models); default: the task's default model")
    max_steps: int | None = Field(None, ge=1, strict=True,  # strict: JSON true is not 1
                                  description="ACT step budget per puzzle; default: the model's "
                                              "halt_max_steps; capped by the server's limit")
    halting: HaltingMode | None = Field(
        None, description="learned: the model's halting head decides; verified (Sudoku, Maze): stop as soon "
                          "as the answer passes the rule check; fixed: always run max_steps")
    return_steps: bool = Field(False, strict=True, description="also return the answer after every ACT step")

    # (single, batch): the two body forms of a solve request, exactly one of which must be sent
    _forms: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _one_form(self) -> SolveOptions:
        if self._forms is not None:
            _exactly_one(self, *self._forms)
        return self


def _exactly_one(obj: BaseModel, single: str, batch: str) -> None:
    """Exactly one of the two fields sent, and not null: what the OpenAPI schema says (`_one_of`)."""
    sent = obj.model_fields_set
    for name in (single, batch):
        if name in sent and getattr(obj, name) is None:
            raise ValueError(f"'{name}' is null; send a value or leave '{name}' out")
    has_single, has_batch = single in sent, batch in sent
    if has_single == has_batch:
        raise ValueError(f"send either '{single}' (one) or '{batch}' (a batch), "
                         f"{'not both' if has_single else 'got neither'}")


def _one_of(single: str, batch: str) -> Callable[[dict[str, Any]], None]:
    """The JSON schema of `_exactly_one`: oneOf required single / batch, neither of them nullable."""

    def extra(schema: dict[str, Any]) -> None:
        for name in (single, batch):
            prop = schema.get("properties", {}).get(name, {})
            options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
            if len(options) == 1:
                prop.update(options[0])
            prop.pop("default", None)
        schema["oneOf"] = [{"required": [single]}, {"required": [batch]}]

    return extra


class GridSolveOptions(SolveOptions):
    """Options of the grid tasks, whose rule check decides correctness (Sudoku, Maze)."""

    views: int | None = Field(
        None, ge=1, strict=True,
        description="run this many symmetric versions of each puzzle (view 0 = as posted; Sudoku: digit "
                    "relabelling, band/row/stack/column shuffles, transpose; Maze: the 8 dihedral maps) and "
                    "answer with the first one whose mapped-back answer passes the rule check (halting="
                    "verified) or the vote of all of them; default 1; at most TRM_MAX_VIEWS")


class SudokuSolveRequest(GridSolveOptions):
    """POST /v1/sudoku/solve: one puzzle (`puzzle`) or a batch (`puzzles`)."""

    model_config = ConfigDict(json_schema_extra=_one_of("puzzle", "puzzles"))
    puzzle: SudokuPuzzle | None = None
    puzzles: list[SudokuPuzzle] | None = Field(None, min_length=1)

    _forms = ("puzzle", "puzzles")


class MazeSolveRequest(GridSolveOptions):
    """POST /v1/maze/solve: one maze (`puzzle`) or a batch (`puzzles`)."""

    model_config = ConfigDict(json_schema_extra=_one_of("puzzle", "puzzles"))
    puzzle: MazePuzzle | None = None
    puzzles: list[MazePuzzle] | None = Field(None, min_length=1)

    _forms = ("puzzle", "puzzles")


class ArcSolveRequest(SolveOptions):
    """POST /v1/arc/solve: one task (`task`) or a batch (`tasks`)."""

    model_config = ConfigDict(json_schema_extra=_one_of("task", "tasks"))
    task: ArcTaskJson | None = None
    tasks: list[ArcTaskJson] | None = Field(None, min_length=1)

    _forms = ("task", "tasks")


# ---- sent by the server ------------------------------------------------------------------------
class Timings(BaseModel):
    queue_s: float = Field(description="waiting for a slot (the slowest row, for multi-row requests)")
    compute_s: float = Field(description="from admission to halting (the slowest row)")
    total_s: float = Field(description="arrival to response")


class _SolveResultBase(BaseModel):
    valid: bool = Field(description="the answer passed the task's rule check")
    violations: list[str] = Field(description="the rules the answer breaks, naming row, column and value")
    steps: int = Field(description="ACT steps run before halting")
    halt_reason: HaltReason
    confidence: float = Field(description="sigmoid(q_halt) at the halting step: the model's belief it is right")
    timings: Timings
    model: str
    views: int = Field(1, description="views (symmetric versions) that ran; fewer than asked when one was "
                                      "verified early")
    view: int = Field(0, description="the view that produced the answer (0 = the puzzle as posted); the answer "
                                     "is always mapped back and checked against the puzzle as posted")
    row_steps: int = Field(description="ACT steps summed over every view that ran: the compute the answer cost")


class SudokuSolveResult(_SolveResultBase):
    solution: list[list[int]] = Field(description="9 rows of 9 digits (0 where the model left a cell blank)")
    trajectory: list[list[list[int]]] | None = Field(None, description="the answer after each step (return_steps)")
    trajectory_confidence: list[float] | None = Field(
        None, description="sigmoid(q_halt) after each step, aligned with trajectory (return_steps)")


class MazeSolveResult(_SolveResultBase):
    solution: list[str] = Field(description="the maze with the path marked 'o'")
    shortest: bool = Field(description="the path is valid and as short as the maze's shortest S-G path")
    trajectory: list[list[str]] | None = Field(None, description="the answer after each step (return_steps)")
    trajectory_confidence: list[float] | None = Field(
        None, description="sigmoid(q_halt) after each step, aligned with trajectory (return_steps)")


class ArcSolveResult(BaseModel):
    attempts: list[list[list[list[int]]]] = Field(
        description="[[attempt 1, attempt 2] per test input], ranked by votes over augmented versions, then "
                    "confidence; attempt 2 repeats attempt 1 when every version agreed; [] for a test input "
                    "where no version gave a well-formed grid")
    votes: list[list[int]] = Field(description="versions that voted for each attempt")
    valid: None = Field(description="always null: ARC has no rule check, so whether an attempt is right is "
                                    "unknown without the task's solution (Sudoku and Maze: true = passed the rules)")
    violations: list[str] = Field(description="problems of form only: versions whose answer was not a well-formed "
                                              "grid (those are never voted into `attempts`)")
    steps: int = Field(description="most ACT steps any row of this task ran")
    halt_reason: HaltReason = Field(description="the most frequent halting reason over the task's rows")
    confidence: float = Field(description="mean sigmoid(q_halt) of the rows that voted for the first attempts")
    num_versions: int = Field(description="augmented versions run per test input")
    timings: Timings
    model: str
    trajectory: list[list[list[list[int]]]] | None = Field(
        None, description="per test input: the first version's answer after each step, mapped back (return_steps)")
    trajectory_confidence: list[list[float]] | None = Field(
        None, description="per test input: the first version's sigmoid(q_halt) after each step (return_steps)")


class SudokuBatchResponse(BaseModel):
    results: list[SudokuSolveResult]


class MazeBatchResponse(BaseModel):
    results: list[MazeSolveResult]


class ArcBatchResponse(BaseModel):
    results: list[ArcSolveResult]


class ModelInfo(BaseModel):
    name: str
    task: str
    is_default: bool
    num_params: int
    halt_max_steps: int
    grid: list[int] = Field(description="[rows, columns] of the model's grid (ARC: its canvas)")
    num_slots: int
    device: str
    num_arc_tasks: int | None = Field(None, description="ARC: tasks the model was trained on")
    train: dict[str, Any] = Field(default_factory=dict, description="training summary from the checkpoint")
    cuda_graphs: dict[str, list[int]] | None = Field(
        None, description="CUDA graphs per row bucket: {captured: [...], fallback: [...]} (fallback: buckets "
                          "whose replay failed the start-up self-check and step eagerly); null when not used")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "ready", "not ready"]
    models: dict[str, dict[str, int]] = Field(default_factory=dict,
                                              description="per model: waiting rows, running rows, slots")


class ProblemError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemError] = Field(default_factory=list)


_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text} for status, text in (
        (400, "the body is not parseable JSON: malformed, not UTF-8, nested too deeply or an integer too long"),
        (401, "missing or wrong API key"), (404, "unknown model"),
        (408, "the body did not arrive within TRM_BODY_TIMEOUT_S"), (413, "request body too large"),
        (422, "invalid puzzle or option; `errors` names each bad cell"),
        (429, "queue full, or the queue ahead makes the deadline unmeetable; see Retry-After"),
        (503, "not ready, shutting down, or too many connections; see Retry-After"), (504, "deadline passed"))
}
