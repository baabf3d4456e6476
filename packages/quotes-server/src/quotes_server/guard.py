"""
Protections that hold however the app is started.

``quotes-server`` runs uvicorn with our two protocols (request-head limits and the
handshake deadline in :mod:`quotes_server.http_protocol`; the inbound rate limit,
close handling and pre-built frames in :mod:`quotes_server.protocol`), with
``X-Forwarded-For`` honoured only from ``trusted_proxies``, and with the frame size
and compression of the settings. ``uvicorn quotes_server.app:create_app --factory``
on its own gets none of that: uvicorn's own protocols, 16 MiB frames, compression
on, and a ``ProxyHeadersMiddleware`` that trusts ``127.0.0.1``, so any local peer
picks its own address. None of it can be installed from inside the app, so:

- :class:`~quotes_server.http_protocol.QuotesHttpProtocol` marks every scope it hands
  the app, HTTP and WebSocket alike, with :class:`ServedBy` (the extension
  :data:`SERVED_BY_EXTENSION`): the WebSocket protocol and the proxy and frame
  options uvicorn runs with;
- :class:`ProtectionGuard`, the app's outermost middleware, answers any request
  whose scope has no mark, or a mark that differs from the settings, with ``500``
  and a text naming what is missing and how to start the server, and logs that
  once at ERROR.

What the app can install itself, :func:`install_protections` installs at create
time: the log redaction (:func:`~quotes_server.logs.install_safe_logging`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.config import Config

from quotes_server.logs import install_safe_logging
from quotes_server.protocol import QuotesWebSocketProtocol
from quotes_server.settings import Settings

__all__ = [
    "HTTP_PROTOCOL",
    "SERVED_BY_EXTENSION",
    "WS_PROTOCOL",
    "ProtectionGuard",
    "ServedBy",
    "install_protections",
    "uvicorn_command",
]

log = logging.getLogger("quotes_server")

SERVED_BY_EXTENSION = "quotes.served_by"
"""Scope extension set by our HTTP protocol: ``{"config": ServedBy}``."""

HTTP_PROTOCOL = "quotes_server.http_protocol:QuotesHttpProtocol"
"""uvicorn's ``--http`` for this server."""
WS_PROTOCOL = "quotes_server.protocol:QuotesWebSocketProtocol"
"""uvicorn's ``--ws`` for this server."""


class ServedBy(NamedTuple):
    """The uvicorn options a request was served with, as our HTTP protocol saw them."""

    ws_protocol: str
    """uvicorn's WebSocket protocol class (``module:name``), or ``none``."""
    ws_ours: bool
    """True when that class is (a subclass of) ours."""
    proxy_headers: bool
    """Whether uvicorn rewrites the client address from ``X-Forwarded-For``."""
    forwarded_allow_ips: tuple[str, ...]
    """The peers uvicorn trusts with that header (normalised networks or literals)."""
    ws_max_size: int
    """Largest client message uvicorn accepts, in bytes."""
    ws_per_message_deflate: bool
    """Whether uvicorn offers per-message-deflate."""

    @classmethod
    def of(cls, config: Config) -> ServedBy:
        """What ``config`` (uvicorn's, loaded) serves requests with."""
        ws_class = config.ws_protocol_class
        name = "none" if ws_class is None else f"{ws_class.__module__}:{ws_class.__qualname__}"
        ours = isinstance(ws_class, type) and issubclass(ws_class, QuotesWebSocketProtocol)
        allowed = config.forwarded_allow_ips
        items = allowed.split(",") if isinstance(allowed, str) else allowed
        return cls(
            name,
            ours,
            bool(config.proxy_headers),
            _networks(items),
            config.ws_max_size,
            bool(config.ws_per_message_deflate),
        )


def _networks(items: Iterable[str]) -> tuple[str, ...]:
    out: set[str] = set()
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            out.add(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            out.add(text)  # "*" or a literal such as a unix socket path
    return tuple(sorted(out))


def uvicorn_command(settings: Settings) -> str:
    """The ``uvicorn`` command line that serves the app with every protection."""
    proxy = (
        f"--forwarded-allow-ips {','.join(settings.trusted_proxies)}"
        if settings.trusted_proxies
        else "--no-proxy-headers"
    )
    return (
        f"uvicorn quotes_server.app:create_app --factory --http {HTTP_PROTOCOL} "
        f"--ws {WS_PROTOCOL} {proxy} --ws-max-size {settings.ws_max_size} "
        f"--ws-per-message-deflate {str(settings.ws_per_message_deflate).lower()}"
    )


def missing_protections(served: ServedBy | None, settings: Settings) -> list[str]:
    """What ``served`` lacks against the settings (empty: everything is in place)."""
    if served is None:
        return [
            f"the HTTP protocol is not {HTTP_PROTOCOL} "
            "(request-head limits, handshake deadline, and the check of everything below)"
        ]
    out: list[str] = []
    if not served.ws_ours:
        out.append(
            f"the WebSocket protocol is {served.ws_protocol}, not {WS_PROTOCOL} "
            "(inbound rate limit, close deadlines, shutdown with 1001)"
        )
    trusted = _networks(settings.trusted_proxies)
    if trusted:
        if not served.proxy_headers or served.forwarded_allow_ips != trusted:
            shown = ",".join(served.forwarded_allow_ips) if served.proxy_headers else "nobody"
            out.append(
                f"X-Forwarded-For is trusted from {shown}, not from QUOTES_TRUSTED_PROXIES "
                f"({','.join(trusted)})"
            )
    elif served.proxy_headers:
        out.append(
            f"X-Forwarded-For is trusted from {','.join(served.forwarded_allow_ips)} "
            "although QUOTES_TRUSTED_PROXIES is empty (a local peer could pick its address)"
        )
    if served.ws_max_size != settings.ws_max_size:
        out.append(
            f"client messages may be {served.ws_max_size} bytes, not QUOTES_WS_MAX_SIZE "
            f"({settings.ws_max_size})"
        )
    if served.ws_per_message_deflate != settings.ws_per_message_deflate:
        out.append(
            f"per-message-deflate is {'on' if served.ws_per_message_deflate else 'off'}, "
            f"unlike QUOTES_WS_PER_MESSAGE_DEFLATE ({settings.ws_per_message_deflate})"
        )
    return out


class ProtectionGuard:
    """
    ASGI middleware: serve only requests our uvicorn protocols marked as served
    with the settings' options; answer any other with ``500`` and how to fix it.

    Args:
        app: the application to protect.
        settings: the options the marks must match.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # one entry per distinct mark: in practice one per process
        self._verdicts: dict[ServedBy | None, str | None] = {}
        self._logged = False

    def _verdict(self, served: ServedBy | None) -> str | None:
        if served not in self._verdicts:
            missing = missing_protections(served, self.settings)
            text = None
            if missing:
                text = (
                    "This server was started without its protections:\n"
                    + "".join(f"- {item}\n" for item in missing)
                    + "Start it with `quotes-server`, or run uvicorn as\n"
                    + f"  {uvicorn_command(self.settings)}\n"
                )
            self._verdicts[served] = text
        return self._verdicts[served]

    def refusal(self, scope: Scope) -> str | None:
        """Why this request must not be served (None: it may be)."""
        mark: Any = scope.get("extensions", {}).get(SERVED_BY_EXTENSION, {}).get("config")
        return self._verdict(mark if isinstance(mark, ServedBy) else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if not self._logged:
            self._logged = True
            log.error("refusing every request: %s", " ".join(refusal.split()))
        response = PlainTextResponse(refusal, status_code=500)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await ws.send_denial_response(response)
        else:
            await ws.close(1011, "Server misconfigured")


def install_protections(app: FastAPI, settings: Settings) -> None:
    """
    Everything ``create_app`` adds so the app is safe however it is started: the
    log redaction now, and :class:`ProtectionGuard` for what only uvicorn's
    configuration can provide.
    """
    install_safe_logging(settings.log_level)
    app.add_middleware(ProtectionGuard, settings=settings)
