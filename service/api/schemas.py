"""Request and response bodies of the HTTP API (docs/ARCHITECTURE.md "HTTP contract"), one model per direction.

Puzzles and tasks are typed loosely here on purpose (any JSON, with an explicit OpenAPI schema): the
task codecs (trm_core.tasks) validate them and name the offending row, column and value, which
pydantic's union errors cannot do. Everything else is strict: unknown fields are refused
(`extra="forbid"`), so nothing a client sends is silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model, model_validator

from service.tasks.options import Items, RequestOptions
from service.traffic import WindowStats
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
    priority: int = Field(0, ge=-100, le=100, strict=True,
                          description="lower is served first (-100..100, default 0); a waiting request gains "
                                      "one level per second, so none waits forever (docs/scheduling.md)")

    # (single, batch): the two body forms of a solve request, exactly one of which must be sent
    _forms: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _one_form(self) -> SolveOptions:
        if self._forms is not None:
            _exactly_one(self, *self._forms)
        return self

    def options(self) -> RequestOptions:
        """The options as the task layer takes them (no HTTP types below this layer)."""
        return RequestOptions(model=self.model, max_steps=self.max_steps, halting=self.halting,
                              return_steps=self.return_steps, views=getattr(self, "views", None),
                              priority=self.priority)

    def items(self) -> Items:
        """The puzzles (or tasks) sent, one or a batch, with their locations."""
        assert self._forms is not None, "only a solve request has items"
        single, batch = self._forms
        return Items.of(getattr(self, single), getattr(self, batch), self._forms)


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


class _OneOfForms:
    """A solve request's two forms as named object schemas (`<Name>One` with the single field required,
    `<Name>Batch` with the batch field), so that client generators type both while `oneOf` keeps the
    exactly-one-of rule (`_exactly_one`) in the document. Validation stays on the one class with
    both fields, whose messages name the fields the client sent; `forms_in_openapi` swaps the
    class's schema for the `oneOf` in the OpenAPI document."""

    _form_models: ClassVar[tuple[type[BaseModel], type[BaseModel]]]


def forms_in_openapi(schemas: dict[str, Any]) -> None:
    """Replace each solve request's component by `oneOf` its two named forms (added as components)."""
    for request in (SudokuSolveRequest, MazeSolveRequest, ArcSolveRequest):
        if request.__name__ not in schemas:
            continue
        refs = []
        for form in request._form_models:
            schema = form.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[form.__name__] = schema
            refs.append({"$ref": f"#/components/schemas/{form.__name__}"})
        schemas[request.__name__] = {"title": request.__name__, "description": request.__doc__, "oneOf": refs}


def _named_forms(name: str, options: type[BaseModel], single: str, batch: str, item: Any,
           doc: str) -> tuple[type[BaseModel], type[BaseModel]]:
    """The two named form models (`<name>One`, `<name>Batch`): the options plus one required field."""
    one = create_model(f"{name}One", __base__=options, __doc__=f"{doc}: one", **{single: (item, ...)})
    many = create_model(f"{name}Batch", __base__=options, __doc__=f"{doc}: a batch, answered in order",
                         **{batch: (list[item], Field(..., min_length=1))})
    return one, many


class GridSolveOptions(SolveOptions):
    """Options of the grid tasks, whose rule check decides correctness (Sudoku, Maze)."""

    views: int | None = Field(
        None, ge=1, strict=True,
        description="run this many symmetric versions of each puzzle (view 0 = as posted; Sudoku: digit "
                    "relabelling, band/row/stack/column shuffles, transpose; Maze: the 8 dihedral maps) and "
                    "answer with the first one whose mapped-back answer passes the rule check (halting="
                    "verified) or the vote of all of them; default 1; at most TRM_MAX_VIEWS")


class SudokuSolveRequest(_OneOfForms, GridSolveOptions):
    """POST /v1/sudoku/solve: one puzzle (`puzzle`) or a batch (`puzzles`)."""

    puzzle: SudokuPuzzle | None = None
    puzzles: list[SudokuPuzzle] | None = Field(None, min_length=1)

    _forms = ("puzzle", "puzzles")
    _form_models = _named_forms("SudokuSolve", GridSolveOptions, "puzzle", "puzzles", SudokuPuzzle, "Sudoku")


class MazeSolveRequest(_OneOfForms, GridSolveOptions):
    """POST /v1/maze/solve: one maze (`puzzle`) or a batch (`puzzles`)."""

    puzzle: MazePuzzle | None = None
    puzzles: list[MazePuzzle] | None = Field(None, min_length=1)

    _forms = ("puzzle", "puzzles")
    _form_models = _named_forms("MazeSolve", GridSolveOptions, "puzzle", "puzzles", MazePuzzle, "Maze")


class ArcSolveRequest(_OneOfForms, SolveOptions):
    """POST /v1/arc/solve: one task (`task`) or a batch (`tasks`)."""

    task: ArcTaskJson | None = None
    tasks: list[ArcTaskJson] | None = Field(None, min_length=1)

    _forms = ("task", "tasks")
    _form_models = _named_forms("ArcSolve", SolveOptions, "task", "tasks", ArcTaskJson, "ARC")


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


class RecipeOut(BaseModel):
    """The serving recipe the model card recommends (checkpoint metadata `recipe`). Not the API's default:
    a solve request runs it only when it asks for these options."""

    views: int = Field(ge=1, description="symmetric views per puzzle (the request's `views`)")
    max_steps: int = Field(ge=1, description="ACT steps per view (the request's `max_steps`)")
    halting: HaltingMode = Field(description="halting mode (the request's `halting`)")


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
    sha256: str | None = Field(None, description="SHA-256 of the checkpoint file the served weights came from")
    cuda_graphs: dict[str, list[int]] | None = Field(
        None, description="CUDA graphs per row bucket: {captured: [...], fallback: [...]} (fallback: buckets "
                          "whose replay failed the start-up self-check and step eagerly); null when not used")
    recipe: RecipeOut | None = Field(
        None, description="the model card's recommended options for hard puzzles (the web page starts from "
                          "them); send them in a solve request to use them, the API's defaults stay one view "
                          "and learned halting; null when the checkpoint names none")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ReloadResponse(BaseModel):
    model: ModelInfo = Field(description="the model as it serves now")
    previous_sha256: str | None = Field(description="the checkpoint it served before the reload")
    changed: bool = Field(description="the file's contents differ from what was served")


class Health(BaseModel):
    status: Literal["ok", "ready", "not ready"]
    models: dict[str, dict[str, int]] = Field(default_factory=dict,
                                              description="per model: waiting rows, running rows, slots")


class ArcAdaptRequest(BaseModel):
    """POST /v1/arc/tasks: adapt a model to a task it was not trained on."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    task: ArcTaskJson
    model: str | None = Field(None, description="ARC model name (GET /v1/models); default: the ARC default")
    max_steps: int | None = Field(None, ge=1, description="training steps; default and cap TRM_ADAPT_MAX_STEPS")
    max_seconds: float | None = Field(None, gt=0, description="training wall time; default and cap TRM_ADAPT_MAX_S")


class AdaptProgressOut(BaseModel):
    step: int
    max_steps: int
    elapsed_s: float
    loss: float = Field(description="training loss per row at this step (falls as the rows learn the task)")


class ArcAdaptJob(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    fingerprint: str = Field(description="the task's content fingerprint (what /v1/arc/solve matches)")
    cached: bool = Field(description="the model already answered this task: nothing was trained")
    created: float
    started: float | None
    finished: float | None
    max_steps: int
    max_seconds: float
    progress: AdaptProgressOut | None
    error: str | None
    heldout_accuracy: float | None = Field(description="after adaptation: fraction of versions whose answer to "
                                                       "the held-out demonstration pair is exactly right")
    heldout_accuracy_before: float | None = Field(description="the same before adaptation (rows at the table mean)")
    heldout_pass2: float | None = Field(description="1 when the held-out output is among the two voted attempts")
    heldout_pass2_before: float | None
    steps: int | None
    seconds: float | None
    stopped: Literal["steps", "time", "cancelled"] | None = Field(description="which budget ended the training")
    loss_first: float | None
    loss_last: float | None
    num_versions: int | None
    attempts: list[list[list[list[int]]]] | None = Field(
        description="when succeeded: [[attempt 1, attempt 2] per test input], voted over the versions")
    votes: list[list[int]] | None


class ModelStats(BaseModel):
    task: str
    queue_depth: int = Field(description="rows waiting for a slot (trm_queue_depth)")
    active_slots: int = Field(description="slots holding a running row (trm_active_slots)")
    slots: int = Field(description="slots in the pool, the largest batch (trm_slots)")
    steps: int = Field(description="ACT steps the pool has run since start")
    mean_occupancy: float = Field(description="mean fraction of slots running per step since start")


class StatsResponse(BaseModel):
    """GET /v1/stats."""

    uptime_s: float
    queue_depth: int = Field(description="sum over models")
    active_slots: int = Field(description="sum over models")
    slots: int = Field(description="sum over models")
    recent: WindowStats
    models: dict[str, ModelStats]


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
