"""A solve request as the task layer sees it: its items, what the caller asked for, what the server will run.

`RequestOptions` is the caller's side (None = the server's default), built by the HTTP layer from
its body schema. `resolve_options` fills the defaults from the settings and the model and refuses
what the server will not run, naming the option and the limit; `trm solve` builds the resolved
options from its flags directly (its limits are the user's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.metrics import Metrics
from service.registry import LoadedModel, ModelRegistry
from service.settings import Settings
from service.tasks.errors import InvalidOptionsError, Loc


@dataclass(frozen=True)
class RequestOptions:
    model: str | None = None
    max_steps: int | None = None
    halting: str | None = None
    return_steps: bool = False
    views: int | None = None
    priority: int = 0  # -100..100, lower first (engine/scheduler.py: aged one level per second of waiting)


@dataclass(frozen=True)
class ResolvedOptions:
    halting: str
    max_steps: int
    return_steps: bool = False
    views: int = 1
    max_view_rows: int | None = None
    timeout_s: float = float("inf")  # from arrival to answer
    priority: int = 0
    view_wave: int | None = None  # verified views: the first wave (Request.first_wave); None: all at once


def resolve_options(opts: RequestOptions, model: LoadedModel, settings: Settings, *,
                    can_verify: bool) -> ResolvedOptions:
    """Fill defaults and refuse what this server will not run (naming the option and the limit)."""
    halting = opts.halting or settings.default_halting
    if halting == "verified" and not can_verify:
        if opts.halting is not None:
            raise InvalidOptionsError(("halting",), f"halting='verified' needs a rule check that decides "
                                      f"correctness; {model.task} has none; use 'learned' or 'fixed'")
        halting = "learned"  # the server-wide default does not apply to this task
    limit = settings.max_steps_limit
    if opts.max_steps is not None and opts.max_steps > limit:
        raise InvalidOptionsError(("max_steps",), f"max_steps={opts.max_steps} exceeds this server's "
                                  f"limit of {limit} (TRM_MAX_STEPS_LIMIT)")
    max_steps = opts.max_steps or settings.default_max_steps or model.config.halt_max_steps
    views = opts.views or 1
    if not -100 <= opts.priority <= 100:
        raise InvalidOptionsError(("priority",), f"priority={opts.priority} is outside -100..100")
    if views > settings.max_views:
        raise InvalidOptionsError(("views",), f"views={views} exceeds this server's limit of "
                                  f"{settings.max_views} (TRM_MAX_VIEWS)")
    return ResolvedOptions(halting=halting, max_steps=min(max_steps, limit), return_steps=opts.return_steps,
                           views=views, max_view_rows=settings.max_view_rows, timeout_s=settings.request_timeout_s,
                           priority=opts.priority, view_wave=settings.view_wave or None)


@dataclass(frozen=True)
class Items:
    """The puzzles (or ARC tasks) of one request: one under `names[0]`, or a batch under `names[1]`."""

    values: list[Any]
    names: tuple[str, str]
    is_batch: bool

    @classmethod
    def of(cls, single: Any, batch: list[Any] | None, names: tuple[str, str]) -> Items:
        """One item (when `batch` is None) or the batch."""
        return cls([single], names, False) if batch is None else cls(batch, names, True)

    @property
    def field(self) -> Loc:
        """Where the items sit: `("puzzle",)` or `("puzzles",)`."""
        return (self.names[1],) if self.is_batch else (self.names[0],)

    def locs(self) -> list[Loc]:
        """Each item's location, `("puzzles", i)`; built only once a batch is known to fit (one tuple per
        item: for a 10,000-item body refused at once, building them cost more than the rest)."""
        return [(self.names[1], i) for i in range(len(self.values))] if self.is_batch else [(self.names[0],)]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class SolveContext:
    """What every solve needs from the running service."""

    registry: ModelRegistry
    settings: Settings
    metrics: Metrics | None = None
