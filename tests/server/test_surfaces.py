"""
Surfaces nobody asked for stay shut: the API pages, client-chosen metric labels, and
(on request) the operator endpoints on the public port.
"""

from __future__ import annotations

import http.client
import re

import pytest

from quotes_server.dashboard import STATIC_DIR
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


def head_of(port: int, path: str, host: str | None = None) -> tuple[int, dict[str, str]]:
    """``GET path`` with an optional ``Host`` header: the status and headers (lower-case)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def directives(policy: str) -> dict[str, list[str]]:
    """A CSP header as directive -> sources."""
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in out, f"{name} twice"
        out[name] = sources
    return out


def test_dashboard_security_headers(start_server: StartServer) -> None:
    """The page has a CSP allowing only its own script, style, fetch and WebSockets; no framing."""
    server = start_server(None)
    for path in ("/", "/dashboard"):
        status, headers = head_of(server.port, path)
        assert status == 200
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        csp = directives(headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"]
        assert csp["style-src"] == ["'self'"]
        assert csp["img-src"] == ["data:"]
        host = "127.0.0.1"
        assert csp["connect-src"] == ["'self'", f"ws://{host}:*", f"wss://{host}:*"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"]
        assert csp["form-action"] == ["'none'"]
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        status, headers = head_of(server.port, asset)
        assert status == 200
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_csp_host_comes_only_from_a_plain_host_header(start_server: StartServer) -> None:
    """A proxy's host name is used for the WebSocket sources; a crafted Host adds nothing."""
    server = start_server(None)
    _status, headers = head_of(server.port, "/", host="quotes.example.com")
    csp = directives(headers["content-security-policy"])
    assert csp["connect-src"] == [
        "'self'",
        "ws://quotes.example.com:*",
        "wss://quotes.example.com:*",
    ]
    _status, headers = head_of(server.port, "/", host="evil.example;script-src *")
    csp = directives(headers["content-security-policy"])
    assert csp["connect-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]


def test_dashboard_files_need_no_inline_code() -> None:
    """The page has no inline script, style or event handler (the CSP would block them)."""
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/dashboard.js">']
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    js = (STATIC_DIR / "dashboard.js").read_text()
    # style attributes written as markup are inline styles too (CSSOM writes are not)
    assert 'setAttribute("style"' not in js
    assert "innerHTML" not in js
    assert "eval(" not in js
    assert "new Function" not in js
