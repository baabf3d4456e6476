"""The contract's browser example, run as written in headless Chromium against our server."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import free_port
from tests.helpers.server import StartServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The contract's JavaScript sample, verbatim but for the URL, plus hooks the test reads.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>quotes</title></head><body>
<pre id="log"></pre>
<script>
window.received = []; window.events = [];
const ws = new WebSocket('__URL__');

ws.onopen = () => {
    console.log('WebSocket connected');
    window.events.push('open');
};

ws.onmessage = (event) => {
    const quote = JSON.parse(event.data);
    console.log(`${quote.ticker}: $${quote.close} @ ${quote.timestamp}`);
    window.received.push(quote);
};

ws.onerror = (error) => {
    console.error('WebSocket error:', error);
    window.events.push('error');
};

ws.onclose = (event) => {
    console.log(`WebSocket closed: ${event.code} ${event.reason}`);
    window.events.push('close ' + event.code);
};
</script></body></html>
"""


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on loopback for the test page; yields (origin, folder)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path
    finally:
        httpd.shutdown()
        httpd.server_close()


def require_chromium() -> str:
    if CHROMIUM is None:
        hint = "chromium not on PATH: install it with `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(hint, pytrace=False)
        pytest.skip(hint)
    return CHROMIUM


def run_page(origin: str, folder: Path, ws_url: str, until: str) -> dict[str, object]:
    """Open the page in Chromium and wait for the JS condition ``until``."""
    from playwright.sync_api import sync_playwright

    (folder / "index.html").write_text(PAGE.replace("__URL__", ws_url))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{origin}/index.html")
            page.wait_for_function(until, timeout=30_000)
            result = page.evaluate("({received: window.received, events: window.events})")
        finally:
            browser.close()
    assert isinstance(result, dict)
    return result


def test_browser_example_receives_quotes(
    page_server: tuple[str, Path], start_server: StartServer
) -> None:
    """The plain browser WebSocket from the contract receives filtered quotes as text frames."""
    require_chromium()
    origin, folder = page_server
    server = start_server(None, cors_origins=origin)
    url = f"ws://127.0.0.1:{server.port}/ws/quotes?tickers=AAPL,MSFT"
    result = run_page(origin, folder, url, "window.received.length >= 3")
    quotes = result["received"]
    assert isinstance(quotes, list)
    assert {q["ticker"] for q in quotes} <= {"AAPL", "MSFT"}
    assert all(isinstance(q["close"], float | int) for q in quotes)
    assert result["events"] == ["open"]


def test_browser_from_disallowed_origin_is_refused(
    page_server: tuple[str, Path], start_server: StartServer
) -> None:
    """A page whose Origin is not in cors_origins cannot open the stream (HTTP 403)."""
    require_chromium()
    origin, folder = page_server
    server = start_server(None, cors_origins="https://trading.example")
    url = f"ws://127.0.0.1:{server.port}/ws/quotes"
    result = run_page(origin, folder, url, "window.events.some(e => e.startsWith('close'))")
    assert result["received"] == []
    assert "open" not in result["events"]
    assert "close 1006" in result["events"]  # what browsers report for a refused handshake
    assert server.metric("quotes_ws_handshakes_total", 'outcome="origin_forbidden"') == 1
