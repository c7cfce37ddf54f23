"""Pure ASGI middleware: the API key, the request body (size and read time), the server guard
(connection limit, drain) and per-request HTTP metrics.

The API key is checked here and only here, from the headers alone, before a byte of the body is
read: an unauthenticated client learns nothing about the parser or the limits (always 401) and
cannot make the server buffer a body. (service/api/deps.py only declares the scheme for OpenAPI.)

The body limit counts the bytes actually received, so a client that sends no Content-Length (or a
false one, or a chunked body) cannot get past it; the body is buffered (at most `max_bytes`) and
replayed to the app, after which `receive` is the server's again (so disconnects stay visible).
The whole body must arrive within `timeout_s` of the first read (408 otherwise), so a client that
announces 1000 bytes and sends 10 cannot hold a connection and a handler forever.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import Problem, send_problem
from service.metrics import Metrics
from trm_core.tasks import TASK_NAMES

# Probes and scrapes: never refused for load, never behind the key (a liveness probe must not fail
# because the server is busy, and orchestrators' probes carry no credentials).
PROBES = ("/healthz", "/readyz", "/metrics")


class ApiKeyMiddleware:
    """401 for /v1/* without `Authorization: Bearer <key>` (constant-time compare), before the body.

    CORS preflights (OPTIONS) pass: browsers never send credentials on them.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", []) if name == b"authorization"), None)
        scheme, _, credentials = (given or b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.key):
            await self.app(scope, receive, send)
            return
        detail = "missing API key: send 'Authorization: Bearer <key>'" if given is None else "wrong API key"
        await send_problem(send, Problem(401, "unauthorized", "Unauthorized", detail,
                                         headers={"WWW-Authenticate": "Bearer"}))


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes`, by Content-Length or by counting the stream; 408 for a
    body that has not fully arrived `timeout_s` after the first read."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = math.inf) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = Problem(413, "body-too-large", "Request body too large",
                            f"request body is larger than {self.max_bytes} bytes (TRM_MAX_BODY_BYTES); "
                            "send smaller batches")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_problem(send, too_large)
                return
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await send_problem(send, Problem(408, "body-timeout", "Request body timeout",
                                                 f"the request body did not arrive within {self.timeout_s:g}s "
                                                 f"(TRM_BODY_TIMEOUT_S); {size} bytes received",
                                                 headers={"Connection": "close"}))
                return
            if message["type"] == "http.disconnect":
                return  # the client left while sending; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_problem(send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@dataclass
class ServerGuard:
    """What the HTTP server knows and the app needs: open connections, drain state, requests in flight.

    `open_connections` is set by the server integration (service/api/server.py); in-process (tests,
    other ASGI servers) it stays None and no connection limit applies.
    """

    max_connections: int | None = None
    open_connections: Callable[[], int] | None = None
    is_draining: bool = False
    num_in_flight: int = 0

    def is_over_limit(self) -> bool:
        return (self.max_connections is not None and self.open_connections is not None
                and self.open_connections() > self.max_connections)


class ServerGuardMiddleware:
    """Connection limit and drain at the HTTP edge.

    Over TRM_MAX_CONNECTIONS open connections, a request gets 503 problem+json with Retry-After and
    `Connection: close` (probes and scrapes pass: a liveness probe must not fail because of load).
    While draining, every response carries `Connection: close`, so that clients open their next
    connection elsewhere instead of reusing one that is about to close. Requests in flight are
    counted: the drain waits for their answers before the server stops.
    """

    def __init__(self, app: ASGIApp, guard: ServerGuard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = self.guard
        if guard.is_over_limit() and scope.get("path") not in PROBES:
            await send_problem(send, Problem(503, "too-many-connections", "Too many connections",
                                             f"the server holds more than {guard.max_connections} open "
                                             "connections (TRM_MAX_CONNECTIONS); retry shortly",
                                             headers={"Retry-After": "1", "Connection": "close"}))
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and guard.is_draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        guard.num_in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            guard.num_in_flight -= 1


class RequestMetricsMiddleware:
    """Counts every /v1/<task>/solve response by task and status and times it.

    Also stamps the arrival time into the request state (`trm_t0`), so handlers report total time
    from arrival, including body upload and validation. A client that went away is counted as 499.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope.get("path", "").strip("/").split("/") if scope["type"] == "http" else []
        if len(parts) != 3 or parts[0] != "v1" or parts[2] != "solve":
            await self.app(scope, receive, send)
            return
        task = parts[1] if parts[1] in TASK_NAMES else "other"
        t0 = time.monotonic()
        scope.setdefault("state", {})["trm_t0"] = t0
        status = 499  # until a response starts: the client left (or we were cancelled)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.observe_request(task, status, time.monotonic() - t0)
