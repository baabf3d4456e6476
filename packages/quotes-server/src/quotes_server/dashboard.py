"""
The live dashboard: static HTML, JavaScript and CSS shipped inside this package,
served at ``/`` and ``/dashboard`` (assets under ``/static``). No build step and no
CDN: the page works offline against the server that serves it.

The page is served with a ``Content-Security-Policy`` that allows exactly what it
uses (its own script and stylesheet, a ``data:`` icon, ``fetch`` and WebSockets to
its own host) and forbids framing; the page and its assets also carry
``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DASHBOARD_PATHS",
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "add_dashboard",
    "content_security_policy",
]

STATIC_DIR = Path(__file__).parent / "static"
"""Folder of the dashboard's files (``index.html``, ``dashboard.js``, ``dashboard.css``)."""

DASHBOARD_PATHS = ("/", "/dashboard")
"""Paths that answer with the dashboard page."""

SECURITY_HEADERS: Mapping[str, str] = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Headers of the page and of every ``/static`` asset."""

# a host name or IPv4 address, optionally with a port: nothing that could end a CSP
# source or directive (IPv6 literals are not valid CSP host sources either)
_HOST = re.compile(r"([A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """
    The dashboard page's ``Content-Security-Policy`` for a request's ``Host`` header.

    ``connect-src 'self'`` covers ``ws:``/``wss:`` to the page's own host only in
    browsers that implement CSP level 3, so the WebSocket schemes are listed for the
    host too, on any port (a proxy may pass the host without the port the browser
    used). A ``Host`` that is not a plain host name is left out: ``'self'`` remains.
    """
    connect = "connect-src 'self'"
    match = _HOST.fullmatch(host or "")
    if match:
        name = match[1]
        connect += f" ws://{name}:* wss://{name}:*"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src data:",  # the empty favicon (<link rel="icon" href="data:,">)
            connect,
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


class _WithHeaders:
    """ASGI wrapper that adds fixed headers to every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at :data:`DASHBOARD_PATHS` and its assets at ``/static``."""
    index = STATIC_DIR / "index.html"

    async def page(request: Request) -> FileResponse:
        """The dashboard page."""
        headers = {
            "Cache-Control": "no-cache",
            "Content-Security-Policy": content_security_policy(request.headers.get("host")),
            **SECURITY_HEADERS,
        }
        return FileResponse(index, media_type="text/html", headers=headers)

    for path in DASHBOARD_PATHS:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.mount(
        "/static", _WithHeaders(StaticFiles(directory=STATIC_DIR), SECURITY_HEADERS), name="static"
    )
