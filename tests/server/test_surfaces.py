"""
Surfaces nobody asked for stay shut: the API pages, client-chosen metric labels, and
(on request) the operator endpoints on the public port.
"""

from __future__ import annotations

import pytest

from tests.helpers.server import StartServer

pytestmark = pytest.mark.anyio

API_PAGES = ("/docs", "/redoc", "/openapi.json")


def test_api_pages_are_off_by_default(start_server: StartServer) -> None:
    """/docs, /redoc and /openapi.json answer 404 unless QUOTES_API_DOCS turns them on."""
    server = start_server(None)
    for path in API_PAGES:
        assert server.get(path)[0] == 404, path
    on = start_server(None, api_docs="true")
    for path in API_PAGES:
        assert on.get(path)[0] == 200, path
    assert '"openapi"' in on.get("/openapi.json")[1]
