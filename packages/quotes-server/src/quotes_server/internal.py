"""
The internal listener: ``/metrics``, ``/ready`` and ``/health`` on a port of their
own (``--internal-port``), for scrapers and health checks, never for the public.

It is a second :class:`uvicorn.Server` in the same process and event loop, started
and stopped by the app's lifespan. It binds its socket itself (so a port in use
fails the start-up with a clear message instead of uvicorn's ``sys.exit`` inside a
task) and runs uvicorn's start-up, tick loop and shutdown, but not
:meth:`uvicorn.Server.serve`: that would install signal handlers over the main
server's. Logging stays as the main server configured it. Requests go through our
:class:`~quotes_server.http_protocol.QuotesHttpProtocol` with the app's
:class:`~quotes_server.limits.ProtocolLimits`, so the request-head limits hold here
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from quotes_server.http_protocol import QuotesHttpProtocol
from quotes_server.limits import LIMITS_STATE_KEY, ProtocolLimits

__all__ = ["INTERNAL_MAX_CONCURRENCY", "INTERNAL_PATHS", "InternalServer"]

log = logging.getLogger("quotes_server")

INTERNAL_PATHS = ("/metrics", "/ready", "/health")
"""What the internal port serves (the first two leave the public port when it is set)."""

INTERNAL_MAX_CONCURRENCY = 64
"""Connections plus requests in flight on the internal port; past it uvicorn answers 503."""


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (the first address it names)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # as asyncio and uvicorn do: "::" means IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class InternalServer:
    """
    Serve ``app`` on ``host:port`` beside the main server, in the same event loop.

    Args:
        app: the ASGI app of the internal endpoints.
        host: interface to listen on.
        port: TCP port.
        limits: the request-head limits of the main server, applied here too.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, limits: ProtocolLimits) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=QuotesHttpProtocol,
            ws="none",
            lifespan="off",
            # the main server configured logging already; None leaves it alone
            log_config=None,
            proxy_headers=False,
            server_header=False,
            limit_concurrency=INTERNAL_MAX_CONCURRENCY,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(self.config)
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """
        Bind the port and start serving.

        Raises:
            RuntimeError: the port cannot be bound (in use, no permission, bad host).
        """
        try:
            self._socket = _bind(self.host, self.port, self.config.backlog)
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen on the internal port {self.host}:{self.port} "
                f"(QUOTES_INTERNAL_HOST/QUOTES_INTERNAL_PORT): {exc.strerror or exc}"
            ) from exc
        config = self.config
        config.load()
        server = self.server
        server.lifespan = config.lifespan_class(config)
        server.lifespan.state[LIMITS_STATE_KEY] = self.limits
        await server.startup(sockets=[self._socket])
        # uvicorn's tick loop keeps the Date header current and watches should_exit
        self._ticks = asyncio.get_running_loop().create_task(server.main_loop())
        log.info(
            "internal endpoints %s on http://%s:%d (not on the public port)",
            ", ".join(INTERNAL_PATHS),
            f"[{self.host}]" if ":" in self.host else self.host,
            self.port,
        )

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (briefly), close the socket."""
        ticks = self._ticks
        if ticks is None:
            return
        self._ticks = None
        log.info("closing the internal port %d", self.port)
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await ticks
        sockets = [self._socket] if self._socket is not None else []
        await self.server.shutdown(sockets=sockets)
        self._socket = None
