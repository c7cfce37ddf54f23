"""What can go wrong between a validated request and its answers, as classes that carry their facts.

Each error holds what a caller needs to act on it (the option at fault, when to retry, the answers
that did finish), so a mapping to a wire format reads fields, never guesses. Locations (`loc`) are
relative to the request (`("puzzles", 3)`, `("halting",)`): the HTTP layer prefixes `body`, `trm
solve` names the puzzle. Errors raised lower down and kept as they are: `trm_core.tasks.TaskInputError`
(a bad puzzle), `service.registry.UnknownModelError`, `service.engine.estimate.DeadlineUnmeetable`
(already carrying its Retry-After).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.engine.scheduler import Request

Loc = tuple[str | int, ...]


class InvalidOptionsError(ValueError):
    """A request option this server cannot honour; `loc` names the option, `msg` says the limit."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = tuple(loc), msg


class QueueFull(RuntimeError):
    """The model's queue cannot take the request's rows now; `retry_after_s` is when the rows ahead
    of it will have drained (from the measured step time)."""

    def __init__(self, msg: str, retry_after_s: int) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TimeoutError):
    """The request did not finish within `timeout_s`; its unfinished rows were cancelled.

    `requests` are its scheduler requests in row order. `partial`, set for a batch, holds one
    `(loc, result or None)` per item in request order: the answers that did finish.
    """

    def __init__(self, timeout_s: float, requests: Sequence[Request] = (),
                 partial: list[tuple[Loc, dict[str, Any] | None]] | None = None) -> None:
        super().__init__(f"the request did not finish within {timeout_s}s")
        self.timeout_s, self.requests, self.partial = timeout_s, list(requests), partial

    @property
    def missed(self) -> list[Loc]:
        return [loc for loc, result in self.partial or [] if result is None]


class ServiceUnavailable(RuntimeError):
    """Not ready, draining, or the model's step failed; `retry_after_s` says when to come back."""

    def __init__(self, msg: str, retry_after_s: int = 5) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class ClientGone(RuntimeError):
    """The client disconnected; its rows were cancelled and nobody reads an answer."""


class AdaptUnavailable(RuntimeError):
    """This install cannot run adaptation jobs (the `training` package is absent)."""
