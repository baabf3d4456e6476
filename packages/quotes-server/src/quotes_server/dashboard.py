"""
The live dashboard: static HTML, JavaScript and CSS shipped inside this package,
served at ``/`` and ``/dashboard`` (assets under ``/static``). No build step and no
CDN: the page works offline against the server that serves it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DASHBOARD_PATHS", "STATIC_DIR", "add_dashboard"]

STATIC_DIR = Path(__file__).parent / "static"
"""Folder of the dashboard's files (``index.html``, ``dashboard.js``, ``dashboard.css``)."""

DASHBOARD_PATHS = ("/", "/dashboard")
"""Paths that answer with the dashboard page."""


def add_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at :data:`DASHBOARD_PATHS` and its assets at ``/static``."""
    index = STATIC_DIR / "index.html"

    async def page() -> FileResponse:
        """The dashboard page."""
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    for path in DASHBOARD_PATHS:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
