"""The Stream protocol page's JavaScript examples, run as written in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM_ARGS, page_server, require_chromium
from tests.helpers.processes import ROOT
from tests.helpers.server import StartServer

__all__ = ["page_server"]  # the fixture, shared with the contract's browser test

PAGE = ROOT / "docs" / "protocol.md"
FENCE = re.compile(r"^```javascript\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
EXAMPLES = FENCE.findall(PAGE.read_text())


def run_example(origin: str, folder: Path, code: str, port: int) -> list[tuple[str, str]]:
    """Run one example until it logs "closed ..."; return its console (type, text) lines."""
    from playwright.sync_api import ConsoleMessage, sync_playwright

    script = code.replace("localhost:8000", f"127.0.0.1:{port}")
    html = (  # no favicon request: its 404 would be a console error
        '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<body><script>\n{script}\n</script></body>"
    )
    (folder / "index.html").write_text(html)
    lines: list[tuple[str, str]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def record(msg: ConsoleMessage) -> None:
                lines.append((msg.type, msg.text))

            page.on("console", record)
            with page.expect_event(
                "console", predicate=lambda m: m.text.startswith("closed"), timeout=30_000
            ):
                page.goto(f"{origin}/index.html")
        finally:
            browser.close()
    return lines


def test_the_page_has_both_browser_examples() -> None:
    """The collection below is not silently empty."""
    assert len(EXAMPLES) == 2


def test_batch_and_actions_example(
    page_server: tuple[str, Path], start_server: StartServer
) -> None:
    """
    batch=1 arrays and a subscribe action, in the browser: the subscription is confirmed
    (after at most AAPL batches: the page's URL subscribed AAPL already), then batches.
    """
    require_chromium()
    origin, folder = page_server
    server = start_server(None, cors_origins=origin, demo_rate=500)
    lines = run_example(origin, folder, EXAMPLES[0], server.port)
    texts = [text for _, text in lines]
    assert [kind for kind, _ in lines if kind == "error"] == []
    subscribed = texts.index("subscribed AAPL,MSFT,NVDA")
    assert all(re.fullmatch(r"batch of \d+, last AAPL", t) for t in texts[:subscribed])
    batches = [t for t in texts if t.startswith("batch of ")]
    assert batches
    assert all(re.fullmatch(r"batch of \d+, last (AAPL|MSFT|NVDA)", t) for t in batches)
    assert texts[-1] == "closed 1000"


def test_ping_clock_offset_example(
    page_server: tuple[str, Path], start_server: StartServer
) -> None:
    """The ping action answers a browser with a pong carrying its id and the server time."""
    require_chromium()
    origin, folder = page_server
    server = start_server(None, cors_origins=origin)
    lines = run_example(origin, folder, EXAMPLES[1], server.port)
    texts = [text for _, text in lines]
    assert re.fullmatch(r"pong after \d+\.\d ms, offset -?\d+\.\d ms", texts[0])
    assert texts[-1] == "closed 1000"


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    require_chromium()
