"""Every error the API answers, as RFC 9457 problem+json: the one place an exception becomes a response.

Each exception class maps to one `Problem` (status, a stable `type` slug, title, detail, the
`errors` list with body locations, headers such as Retry-After) built from the fields the exception
carries. The middleware answers its own refusals (401, 408, 413, 503 over the connection limit)
before any route runs, with the same `Problem` and `send_problem`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from service.engine.estimate import DeadlineUnmeetable
from service.registry import ReloadConflict, ReloadFailed, UnknownModelError
from service.tasks.adapt import AdaptQueueFull, JobNotFound
from service.tasks.errors import (
    AdaptUnavailable,
    ClientGone,
    DeadlineExceeded,
    InvalidOptionsError,
    QueueFull,
    ServiceUnavailable,
)
from trm_core.tasks import TaskInputError

__all__ = ["PROBLEM_JSON", "Problem", "install_error_handlers", "send_problem"]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
Loc = Sequence[str | int]


@dataclass(frozen=True)
class Problem:
    """One problem+json answer; `type` is `urn:trm:problem:<slug>`, `extra` adds extension members."""

    status: int
    slug: str
    title: str
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"type": f"urn:trm:problem:{self.slug}", "title": self.title, "status": self.status,
                "detail": self.detail, "errors": self.errors, **self.extra}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers)


async def send_problem(send: Send, problem: Problem) -> None:
    """Answer from ASGI middleware, before (or instead of) the app."""
    body = json.dumps(problem.body()).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in problem.headers.items())]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def in_body(loc: Loc) -> list[str | int]:
    """A location within the request (what the task layer names) as a location in the HTTP body."""
    return ["body", *loc]


def malformed(why: str) -> Problem:
    """400 for every body that cannot be parsed as JSON (malformed, not UTF-8, too deep, too long an int):
    one status and one `type` for all of them; 422 is for JSON that parses but is not a valid request."""
    return Problem(400, "malformed-body", "Malformed body", f"the request body is not parseable JSON: {why}")


def _retry(status: int, slug: str, title: str, detail: str, retry_after_s: int) -> Problem:
    return Problem(status, slug, title, detail, headers={"Retry-After": str(retry_after_s)})


# ---- one function per exception class ----------------------------------------------------------
def _invalid_body(request: Request, exc: RequestValidationError) -> Problem:
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return malformed("it is not valid JSON")
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return Problem(422, "invalid-request", "Invalid request", detail, errors)


def _invalid_puzzle(request: Request, exc: TaskInputError) -> Problem:
    return Problem(422, "invalid-puzzle", "Invalid puzzle", str(exc),
                   [{"loc": in_body(loc), "msg": msg} for loc, msg in exc.errors])


def _invalid_option(request: Request, exc: InvalidOptionsError) -> Problem:
    return Problem(422, "invalid-option", "Invalid option", exc.msg, [{"loc": in_body(exc.loc), "msg": exc.msg}])


def _unknown_model(request: Request, exc: UnknownModelError) -> Problem:
    # a name sent in the body (task given), not one in the path
    errors = [{"loc": in_body(("model",)), "msg": str(exc)}] if exc.name is not None and exc.task is not None else []
    return Problem(404, "unknown-model", "Unknown model", str(exc), errors)


def _reload_conflict(request: Request, exc: ReloadConflict) -> Problem:
    return Problem(409, "reload-conflict", "Checkpoint does not fit the running model", str(exc))


def _reload_failed(request: Request, exc: ReloadFailed) -> Problem:
    return Problem(422, "reload-failed", "Checkpoint cannot be served", str(exc))


def _unknown_job(request: Request, exc: JobNotFound) -> Problem:
    return Problem(404, "unknown-job", "Unknown job", str(exc))


def _queue_full(request: Request, exc: QueueFull) -> Problem:
    return _retry(429, "queue-full", "Queue full", f"{exc}; retry in about {exc.retry_after_s}s", exc.retry_after_s)


def _adapt_queue_full(request: Request, exc: AdaptQueueFull) -> Problem:
    return _retry(429, "adapt-queue-full", "Adaptation queue full", f"{exc}; retry in about {exc.retry_after_s}s",
                  exc.retry_after_s)


def _deadline_unmeetable(request: Request, exc: DeadlineUnmeetable) -> Problem:
    return _retry(429, "deadline-unmeetable", "Deadline cannot be met", str(exc), exc.retry_after_s)


def _adapt_unavailable(request: Request, exc: AdaptUnavailable) -> Problem:
    return Problem(501, "adapt-unavailable", "Adaptation unavailable", str(exc))


def _unavailable(request: Request, exc: ServiceUnavailable) -> Problem:
    return _retry(503, "unavailable", "Service unavailable", str(exc), exc.retry_after_s)


def _deadline(request: Request, exc: DeadlineExceeded) -> Problem:
    if not exc.partial:
        return Problem(504, "deadline", "Deadline exceeded",
                       f"the request did not finish within {exc.timeout_s}s (TRM_REQUEST_TIMEOUT_S); its rows were "
                       "cancelled; lower max_steps or send smaller batches")
    missed = exc.missed
    return Problem(
        504, "deadline", "Deadline exceeded",
        f"{len(missed)} of {len(exc.partial)} puzzles did not finish within {exc.timeout_s}s (TRM_REQUEST_TIMEOUT_S) "
        "and were cancelled; `results` holds the answers of the others in request order (null where missed): "
        "resend only the puzzles named in `errors`",
        [{"loc": in_body(loc), "msg": "did not finish before the deadline"} for loc in missed],
        extra={"results": [result for _, result in exc.partial]})  # an RFC 9457 extension member


def _client_gone(request: Request, exc: ClientGone) -> Problem:
    return Problem(499, "client-closed", "Client closed request", str(exc))


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path templates that match `path`."""
    methods: set[str] = set()
    for template, ops in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)), path):
            methods.update(m.upper() for m in ops)
    return sorted(methods)


def _http(request: Request, exc: StarletteHTTPException) -> Problem:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's json.loads
        cause = exc.__cause__
        return malformed("it is not UTF-8" if isinstance(cause, UnicodeDecodeError) else
                         "it is nested too deeply" if isinstance(cause, RecursionError) else
                         f"{cause}" if cause is not None else "it cannot be parsed")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}; see /docs"
    elif exc.status_code == 405:  # Allow: every documented method on this path, not only the first route's
        allowed = _allowed_methods(request.app, request.url.path) or [
            m.strip() for m in headers.get("Allow", "").split(",") if m.strip()]
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
    return Problem(exc.status_code, f"http-{exc.status_code}", detail, detail, headers=headers)


def _internal(request: Request, exc: Exception) -> Problem:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Problem(500, "internal", "Internal server error",
                   f"{type(exc).__name__} while handling the request; the server log has the traceback")


PROBLEMS: dict[type[Exception], Callable[[Request, Any], Problem]] = {
    RequestValidationError: _invalid_body, TaskInputError: _invalid_puzzle, InvalidOptionsError: _invalid_option,
    UnknownModelError: _unknown_model, ReloadConflict: _reload_conflict, ReloadFailed: _reload_failed,
    JobNotFound: _unknown_job, QueueFull: _queue_full,
    AdaptQueueFull: _adapt_queue_full, DeadlineUnmeetable: _deadline_unmeetable,
    AdaptUnavailable: _adapt_unavailable, ServiceUnavailable: _unavailable, DeadlineExceeded: _deadline,
    ClientGone: _client_gone, StarletteHTTPException: _http, Exception: _internal,
}


def install_error_handlers(app: FastAPI) -> None:
    """Register `PROBLEMS`: each exception class answers with its problem+json."""
    for exc_class, to_problem in PROBLEMS.items():
        async def handler(request: Request, exc: Exception, to_problem=to_problem) -> JSONResponse:
            return to_problem(request, exc).response()
        app.add_exception_handler(exc_class, handler)
