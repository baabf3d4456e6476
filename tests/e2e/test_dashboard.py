"""The dashboard page in headless Chromium against the real server (demo feed and Redis)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quotes_core.testing import upstream_message
from tests.e2e.test_browser import CHROMIUM_ARGS, require_chromium
from tests.helpers.processes import ROOT, RedisServer, free_port, wait_until
from tests.helpers.publishing import publishing
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.upgrade_blocker import UpgradeBlockingProxy
from tests.server.test_deployment_history import REDIS_HISTORY, published, status

SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"


# runs before the page's own script in every document the page loads
CSP_WATCH = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`);
});
"""


_FUNCTION = re.compile(r"\s*(async\s+)?(function\b|\([^()]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")


class CspSafePage:
    """
    A Playwright page whose ``wait_for_function`` takes a JavaScript expression as
    well as a function: the expression is wrapped in one. Playwright re-evaluates a
    string predicate with ``eval`` on every poll, which the page's policy (no
    ``'unsafe-eval'``) refuses; a function is evaluated once and then called.
    """

    def __init__(self, page: Any) -> None:
        self.page = page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def wait_for_function(self, expression: str, **kwargs: Any) -> Any:
        if not _FUNCTION.match(expression):
            expression = f"() => ({expression})"
        return self.page.wait_for_function(expression, **kwargs)


@contextmanager
def dashboard(url: str, csp_violations: list[str] | None = None) -> Iterator[object]:
    """
    A Chromium page open at ``url``; page errors fail the test, and so does any
    Content-Security-Policy violation (or they are collected into ``csp_violations``).
    """
    from playwright.sync_api import ConsoleMessage, sync_playwright

    errors: list[str] = []
    violations: list[str] = []

    def console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text:
            violations.append(msg.text)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", console)
            page.add_init_script(CSP_WATCH)
            response = page.goto(url)
            # the page runs under its policy, so "no violation" means something
            assert response is not None
            assert "script-src 'self'" in response.headers["content-security-policy"]
            yield CspSafePage(page)
            violations.extend(page.evaluate("window.cspViolations"))
        finally:
            browser.close()
    assert errors == []
    if csp_violations is None:
        assert violations == []
    else:
        csp_violations.extend(violations)


def rows(page: object) -> dict[str, float]:
    """Ticker -> last price of every row the page shows, read from the DOM."""
    cells = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#rows .row",
        "trs => trs.map(tr => [tr.dataset.ticker, tr.querySelector('.last').textContent])",
    )
    return {t: float(p) for t, p in cells if p not in ("", "–")}


def test_dashboard_is_served_from_the_package(start_server: StartServer) -> None:
    """/ and /dashboard answer the page, and its script and stylesheet come from /static."""
    server = start_server(None)
    for path in ("/", "/dashboard"):
        status, body = server.get(path)
        assert status == 200
        assert '<script src="/static/dashboard.js">' in body
        assert "http://" not in body  # no CDN: works offline
        assert "https://" not in body
    assert server.get("/static/dashboard.js")[0] == 200
    assert server.get("/static/dashboard.css")[0] == 200


def test_dashboard_shows_only_chosen_tickers_and_updates(start_server: StartServer) -> None:
    """Demo feed: rows for the chosen tickers only, prices change, a new choice replaces them."""
    require_chromium()
    server = start_server(None, demo_rate=600)
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL,MSFT") as page:
        page.wait_for_function("window.dashboard.rows.size === 2", timeout=15_000)  # type: ignore[attr-defined]
        first = rows(page)
        assert set(first) == {"AAPL", "MSFT"}
        page.wait_for_function(  # type: ignore[attr-defined]
            "prev => [...document.querySelectorAll('#rows .row .last')]"
            ".some((td, i) => td.textContent !== prev[i])",
            arg=[f"{first[t]:.2f}" for t in sorted(first)],
            timeout=15_000,
        )
        assert page.evaluate("window.dashboard.state()") == "open"  # type: ignore[attr-defined]
        assert "live" in page.inner_text("#state")  # type: ignore[attr-defined]
        page.fill("#tickers", "nvda, tsla")  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "['NVDA','TSLA'].every(t => window.dashboard.rows.has(t))", timeout=15_000
        )
        assert set(rows(page)) <= {"NVDA", "TSLA"}
        # the latency percentiles are computed once a second: poll for the first
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.stats.lastP99 !== null", timeout=15_000
        )
        stats = page.evaluate("window.dashboard.stats")  # type: ignore[attr-defined]
        assert stats["lastP99"] >= 0
    assert "mode=latest" in server.log()  # a tab that falls behind gets no backlog


BANNER = "Demo data — synthetic prices, not market quotes"


def test_dashboard_demo_banner(redis_server: RedisServer, start_server: StartServer) -> None:
    """On the demo feed the page shows a banner saying the prices are synthetic (from
    ``GET /info``); fed by Redis it shows none, once it has read /info."""
    require_chromium()
    demo = start_server(None)
    fed = start_server(redis_server)
    assert demo.get("/info") == (200, '{"demo":true}')
    assert fed.get("/info") == (200, '{"demo":false}')
    with dashboard(f"{demo.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_selector("#demo", state="visible", timeout=15_000)  # type: ignore[attr-defined]
        assert page.inner_text("#demo") == BANNER  # type: ignore[attr-defined]
        box = page.locator("#demo").bounding_box()  # type: ignore[attr-defined]
        assert box["y"] == 0  # the top of the page, above the header
        assert box["height"] > 20
    with dashboard(f"{fed.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_function("window.dashboard.info() !== null", timeout=15_000)  # type: ignore[attr-defined]
        assert page.evaluate("window.dashboard.info()") == {"demo": False}  # type: ignore[attr-defined]
        assert not page.is_visible("#demo")  # type: ignore[attr-defined]
        assert BANNER not in page.inner_text("body")  # type: ignore[attr-defined]


def test_dashboard_snapshot_on_connect_and_live_set(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Rows come from the snapshot (nothing published after the page opens); a new choice
    of tickers is a live ``set`` on the same socket, whose snapshot fills the new rows."""
    require_chromium()
    server = start_server(redis_server)
    published = [
        upstream_message("AAPL", 1, close=190.25),
        upstream_message("MSFT", 2, close=410.5),
    ]
    published += [
        upstream_message("NVDA", 3, close=120.75),
        upstream_message("IBM", 4, close=230.0),
    ]
    before = server.metric("quotes_upstream_messages_total")
    redis_server.publish_many(CHANNEL, published)
    wait_until(
        lambda: server.metric("quotes_upstream_messages_total") >= before + len(published),
        what="server read the published quotes",
    )
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL,MSFT") as page:
        page.wait_for_function(  # type: ignore[attr-defined]
            "['AAPL','MSFT'].every(t => window.dashboard.rows.get(t)?.cells.last.textContent"
            " && window.dashboard.rows.get(t).cells.last.textContent !== '')",
            timeout=15_000,
        )
        assert rows(page) == {"AAPL": 190.25, "MSFT": 410.5}
        page.fill("#tickers", "msft, nvda, ibm")  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "['MSFT','NVDA','IBM'].every(t => window.dashboard.rows.get(t)?.cells.last.textContent)"
            " && !window.dashboard.rows.has('AAPL')",
            timeout=15_000,
        )
        assert rows(page) == {"IBM": 230.0, "MSFT": 410.5, "NVDA": 120.75}
        stats = page.evaluate("window.dashboard.stats")  # type: ignore[attr-defined]
        assert stats["opens"] == 1  # the page did not reconnect ...
        assert stats["liveSets"] == 1  # ... the server answered "subscribed" on the open socket
        assert stats["setFallbacks"] == 0
        assert "subscribed: IBM,MSFT,NVDA" in page.inner_text("#message")  # type: ignore[attr-defined]
        assert server.metric("quotes_ws_handshakes_total", 'outcome="accepted"') == 1
        assert server.metric("quotes_ws_connections") == 1
    assert "snapshot=1" in server.log()


def test_dashboard_falls_back_to_reconnecting_when_set_is_refused(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """An ``error`` reply to the live ``set`` (here: a bad symbol) makes the page reconnect
    with the new ``?tickers=`` instead, and the control frame is never a row."""
    require_chromium()
    server = start_server(redis_server)
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_function("window.dashboard.state() === 'open'", timeout=15_000)  # type: ignore[attr-defined]
        page.fill("#tickers", "B@D")  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.stats.setFallbacks === 1", timeout=15_000
        )
        # the reconnection with ?tickers=B@D is refused at the handshake (400)
        page.wait_for_function(  # type: ignore[attr-defined]
            "document.getElementById('message').textContent.includes('handshake failed')",
            timeout=15_000,
        )
        assert page.evaluate("window.dashboard.stats.liveSets") == 0  # type: ignore[attr-defined]
        assert page.evaluate("window.dashboard.rows.size") == 0  # type: ignore[attr-defined]
    assert server.metric("quotes_ws_handshakes_total", 'outcome="bad_request"') >= 1


COUNT_FRAMES = """
(ms) => new Promise((resolve) => {
  const d = window.dashboard.stats, renders = d.renders, received = d.received;
  let frames = 0;
  const start = performance.now();
  const tick = (t) => {
    frames += 1;
    if (t - start < ms) { requestAnimationFrame(tick); return; }
    resolve({frames, renders: d.renders - renders, received: d.received - received});
  };
  requestAnimationFrame(tick);
})
"""


@pytest.mark.slow
def test_dashboard_renders_once_per_frame_under_load(start_server: StartServer) -> None:
    """At 2,000 quotes/s over 300 tickers the page renders at most once per animation frame."""
    require_chromium()
    server = start_server(None, demo_rate=2000, demo_tickers=300)
    with dashboard(f"{server.http_url}/dashboard?tickers=*") as page:
        page.wait_for_function("window.dashboard.rows.size >= 250", timeout=30_000)  # type: ignore[attr-defined]
        counts = page.evaluate(COUNT_FRAMES, 2000)  # type: ignore[attr-defined]
        assert counts["renders"] <= counts["frames"] + 1
        assert counts["received"] > 2 * counts["renders"]  # many quotes per render
        assert page.evaluate("window.dashboard.state()") == "open"  # type: ignore[attr-defined]


def test_dashboard_token_field_reaches_an_auth_server(start_server: StartServer) -> None:
    """Without a token the page says "rejected"; with the token typed in it goes live."""
    require_chromium()
    server = start_server(None, auth_tokens="s3cret-token")
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_function(  # type: ignore[attr-defined]
            "document.getElementById('message').textContent.includes('rejected (origin/auth?)')",
            timeout=15_000,
        )
        assert "retry in" in page.inner_text("#state")  # type: ignore[attr-defined]
        page.fill("#token", "s3cret-token")  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]
        page.wait_for_function("window.dashboard.rows.has('AAPL')", timeout=15_000)  # type: ignore[attr-defined]
        assert page.evaluate("sessionStorage.getItem('quotes.token')") == "s3cret-token"  # type: ignore[attr-defined]
    assert "s3cret-token" not in server.log()


@pytest.mark.slow
def test_dashboard_survives_a_redis_outage(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Stopping Redis shows "disconnected" with a countdown; the page recovers when it returns."""
    require_chromium()
    server = start_server(redis_server, grace_period=1)
    with (
        publishing(redis_server, ["AAPL", "MSFT", "IBM"]),
        dashboard(f"{server.http_url}/dashboard?tickers=AAPL,IBM") as page,
    ):
        page.wait_for_function("window.dashboard.rows.size === 2", timeout=15_000)  # type: ignore[attr-defined]
        assert set(rows(page)) == {"AAPL", "IBM"}
        redis_server.stop()
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.stats.closes.includes(1011)", timeout=20_000
        )
        page.wait_for_function(  # type: ignore[attr-defined]
            "/disconnected, retry in \\d+ s/.test(document.getElementById('state').textContent)",
            timeout=10_000,
        )
        applied = page.evaluate("window.dashboard.stats.applied")  # type: ignore[attr-defined]
        redis_server.start()
        page.wait_for_function(  # type: ignore[attr-defined]
            "n => window.dashboard.state() === 'open' && window.dashboard.stats.applied > n",
            arg=applied,
            timeout=60_000,
        )
        assert "live" in page.inner_text("#state")  # type: ignore[attr-defined]
        assert page.evaluate("window.dashboard.stats.opens") >= 2  # type: ignore[attr-defined]
        assert set(rows(page)) == {"AAPL", "IBM"}


def test_dashboard_on_sse_when_asked_changes_tickers_with_a_new_stream(
    start_server: StartServer,
) -> None:
    """?transport=sse: no WebSocket at all; Apply opens a new stream with the new tickers."""
    require_chromium()
    server = start_server(None, demo_rate=500)
    with dashboard(f"{server.http_url}/dashboard?transport=sse&tickers=AAPL") as page:
        page.wait_for_function("window.dashboard.rows.has('AAPL')", timeout=15_000)  # type: ignore[attr-defined]
        assert page.inner_text("#state") == "live · SSE"  # type: ignore[attr-defined]
        page.fill("#tickers", "MSFT")  # type: ignore[attr-defined]
        page.click("button[type=submit]")  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.rows.has('MSFT') && !window.dashboard.rows.has('AAPL')",
            timeout=15_000,
        )
        assert page.evaluate("window.dashboard.stats.sseOpens") == 2  # type: ignore[attr-defined]
    assert server.metric("quotes_ws_handshakes_total", 'outcome="accepted"') == 0
    assert server.metric("quotes_sse_handshakes_total", 'outcome="accepted"') == 2


@pytest.mark.slow
def test_dashboard_falls_back_to_sse_when_websockets_are_blocked_and_resumes_a_restart(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    Behind a proxy that refuses WebSocket upgrades the page switches to EventSource and
    says so; when its server restarts, the browser reconnects by itself with
    Last-Event-ID and the server (positions in Redis, kept by the other instance
    meanwhile) replays what it missed: recovered, the latest prices shown.
    """
    require_chromium()
    a = start_server(redis_server, **REDIS_HISTORY)
    b = start_server(redis_server, **REDIS_HISTORY)
    with (
        UpgradeBlockingProxy(a.port) as proxy,
        dashboard(f"http://127.0.0.1:{proxy.port}/dashboard?tickers=AAPL,MSFT") as page,
    ):
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.transport() === 'sse' && window.dashboard.state() === 'open'",
            timeout=15_000,
        )
        assert proxy.refused >= 1  # the page's WebSocket was refused: it did try
        assert page.inner_text("#state") == "live · SSE"  # type: ignore[attr-defined]
        wait_until(lambda: a.metric("quotes_sse_streams") == 1, what="the page's stream")
        published(redis_server, [a, b], [upstream_message("AAPL", 1, close=101.5)])
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.rows.get('AAPL')?.last === 101.5", timeout=10_000
        )
        port = a.port
        a.stop()  # SIGTERM: the stream ends with its closing event, 1001
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.stats.closes.includes(1001)", timeout=10_000
        )
        before = status(b)["seq"]
        redis_server.publish_many(
            CHANNEL, [upstream_message("MSFT", n, close=300.0 + n) for n in range(2, 6)]
        )
        wait_until(lambda: status(b)["seq"] >= before + 4, what="the other instance sequencing")
        start_server(redis_server, port=port, **REDIS_HISTORY)
        page.wait_for_function(  # type: ignore[attr-defined]
            "window.dashboard.stats.recovered >= 1"
            " && window.dashboard.rows.get('MSFT')?.last === 305",
            timeout=30_000,
        )
        stats = page.evaluate("window.dashboard.stats")  # type: ignore[attr-defined]
        assert stats["sseOpens"] >= 2
        assert stats["unrecovered"] == 0
        assert page.evaluate("window.dashboard.transport()") == "sse"  # type: ignore[attr-defined]
        assert rows(page) == {"AAPL": 101.5, "MSFT": 305.0}


def test_dashboard_screenshot_is_in_the_docs() -> None:
    """docs/img/dashboard.png (make screenshot) exists and is a PNG of a sensible size."""
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 800 <= width <= 3000
    assert 300 <= height <= 3000
    assert 10_000 < len(data) < 2_000_000
    assert "img/dashboard.png" in (ROOT / "docs" / "index.md").read_text()


def test_screenshot_target_exists() -> None:
    """`make screenshot` regenerates the picture with the script the docs name."""
    makefile = (ROOT / "Makefile").read_text()
    assert "screenshot:" in makefile
    assert "scripts/dashboard.py screenshot docs/img/dashboard.png" in makefile
    assert Path(ROOT / "scripts" / "dashboard.py").is_file()


def test_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """The quotes-server wheel contains the page, its script and its stylesheet."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv not found")
    out = subprocess.run(
        [uv, "build", "--wheel", "--offline", "packages/quotes-server", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("quotes_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        assert f"quotes_server/static/{name}" in names


def test_dashboard_csp_blocks_inline_code(start_server: StartServer) -> None:
    """The browser enforces the page's policy: an inline <style> added at run time is refused."""
    require_chromium()
    server = start_server(None)
    violations: list[str] = []
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL", violations) as page:
        page.wait_for_function("window.dashboard.state() === 'open'", timeout=15_000)  # type: ignore[attr-defined]
        assert page.evaluate("window.cspViolations") == []  # type: ignore[attr-defined]
        page.evaluate(  # type: ignore[attr-defined]
            "() => { const s = document.createElement('style');"
            " s.textContent = 'body { color: red }'; document.head.appendChild(s); }"
        )
        page.wait_for_function("window.cspViolations.length > 0", timeout=10_000)  # type: ignore[attr-defined]
    assert any(v.startswith("style-src-elem inline") for v in violations), violations


def test_dashboard_without_public_ready(start_server: StartServer) -> None:
    """With /ready on the internal port (404 here), a refused page says it cannot tell why."""
    require_chromium()
    server = start_server(
        None, auth_tokens="s3cret-token", internal_port=free_port(), wait_ready=False
    )
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_function(  # type: ignore[attr-defined]
            "document.getElementById('message').textContent.includes("
            "'rejected (origin/auth?) or server unavailable')",
            timeout=15_000,
        )


def test_dashboard_latency_leaves_out_the_snapshot(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    The snapshot's quotes (the latest price of each ticker, sent first) tell how old a
    price is, not how long delivery took: an hour-old AAPL quote becomes a row but not a
    latency sample, while the live quotes after it are samples.
    """
    require_chromium()
    server = start_server(redis_server)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    redis_server.publish(CHANNEL, upstream_message("AAPL", 1, timestamp=an_hour_ago))
    wait_until(lambda: server.metric("quotes_upstream_messages_total") >= 1, what="read")
    with dashboard(f"{server.http_url}/dashboard?tickers=AAPL") as page:
        page.wait_for_function("window.dashboard.rows.has('AAPL')", timeout=15_000)  # type: ignore[attr-defined]
        stats = page.evaluate("window.dashboard.stats")  # type: ignore[attr-defined]
        assert (stats["stale"], stats["latencySamples"]) == (1, 0)
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        page.wait_for_function("window.dashboard.stats.latencySamples === 1", timeout=15_000)  # type: ignore[attr-defined]
        assert page.evaluate("window.dashboard.stats.stale") == 1  # type: ignore[attr-defined]
