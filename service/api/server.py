"""uvicorn, set up for hostile clients and for a shutdown that answers every request.

Two additions to a stock `uvicorn.run`:

- A header timeout. uvicorn has none: a connection that sends half a request line stays open
  forever (its keep-alive timer is cancelled by any byte received). Here every connection must
  complete its request headers within TRM_BODY_TIMEOUT_S of opening (or of its previous
  response), else it is closed; the body has its own limit of the same length in
  BodyLimitMiddleware (408). Together with TRM_MAX_CONNECTIONS (ServerGuardMiddleware) a slow
  client holds one bounded connection for a bounded time.
- SIGTERM drains the app first (`app.state.drain`, service/api/lifecycle.py) while the port stays
  open, then lets uvicorn stop. A second SIGTERM or SIGINT falls back to uvicorn's immediate exit.

uvicorn's `limit_concurrency` is not used: its 503 is text/plain without Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 0.3  # between closing the port and closing idle connections


def header_timeout_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(timeout_s, self._on_header_timeout)

        def _on_header_timeout(self) -> None:
            is_idle = self.cycle is None or self.cycle.response_complete  # no request headers since
            if is_idle and not self.transport.is_closing():
                if self.conn.trailing_data[0]:  # bytes of an unfinished request line or headers
                    logger.info("closing a connection from %s: request headers incomplete after %.1fs "
                                "(TRM_BODY_TIMEOUT_S)", self.client, timeout_s)
                self.transport.close()

    return HeaderTimeoutProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT runs the app's drain before the server stops."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[object]]) -> None:
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_draining = False
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler on the loop's thread: hand over to the loop, do nothing here.
        if self._is_draining or not self.started or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal, or one during start-up: uvicorn's fast path
            return
        self._is_draining = True
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        logger.info("received %s: draining before exit", signal.Signals(sig).name)
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self.drain()
            # Stop accepting, then answer (503, Connection: close) what already arrived on open
            # connections before uvicorn closes the idle ones: a request whose bytes were in flight
            # would otherwise meet a closed connection.
            for server in self.servers:
                server.close()
            await asyncio.sleep(CLOSE_GRACE_S)
        except Exception:
            logger.exception("drain failed; stopping anyway")
        finally:
            self.should_exit = True


def serve(app: Any) -> bool:
    """Run `app` (from service.api.app.create_app) until SIGTERM/SIGINT, then drain and stop.

    Returns False when the server never started (e.g. the port is taken; uvicorn logged why).
    """
    from service.api.lifecycle import DrainPlan

    settings = app.state.settings
    plan = DrainPlan.from_settings(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            lifespan="on", http=header_timeout_protocol(settings.body_timeout_s),
                            timeout_keep_alive=max(1, min(5, int(settings.body_timeout_s))),
                            timeout_graceful_shutdown=max(0.1, plan.server_s))  # type: ignore[arg-type]
    server = DrainingServer(config, drain=app.state.drain)
    app.state.guard.open_connections = lambda: len(server.server_state.connections)
    server.run()
    return server.started
