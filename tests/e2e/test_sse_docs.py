"""
The *When WebSockets are blocked* page's examples, run as written against the real
server's demo feed: its ``curl`` commands, and its ``EventSource`` snippet in Chromium
on a page from another origin (an ``EventSource`` is a CORS request).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM_ARGS, page_server, require_chromium
from tests.helpers.processes import ROOT
from tests.helpers.server import StartServer

__all__ = ["page_server"]  # the fixture, used here

PAGE = ROOT / "docs" / "sse.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
BLOCKS = [(lang, code) for lang, code in FENCE.findall(PAGE.read_text())]
CURLS = [
    line
    for lang, code in BLOCKS
    if lang == "bash"
    for line in code.splitlines()
    if line.startswith("curl ")
]
(BROWSER,) = [code for lang, code in BLOCKS if lang == "js"]


def test_the_page_has_its_examples() -> None:
    """The collections below are not silently empty."""
    assert len(CURLS) == 4
    assert "new EventSource(" in BROWSER


def run_curl(command: str, port: int) -> tuple[int, str]:
    """Run a documented curl command (a stream is cut after 2 s); its exit status and output."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    argv = shlex.split(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    out = subprocess.run(
        [*argv, "--max-time", "2", "--silent", "--show-error"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.returncode, out.stdout


def events(text: str) -> list[dict[str, str]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            found.append(fields)
    return found


def test_the_curl_examples_do_what_the_page_says(start_server: StartServer) -> None:
    """A stream of quote events; a resume from an unknown epoch; a 400 with its reason."""
    server = start_server(None, demo_rate=500)
    stream, resume, snapshot, refusal = CURLS
    code, out = run_curl(stream, server.port)
    assert code == 28  # cut by --max-time: the stream never ends by itself
    assert out.startswith("retry: 1000\n\n")
    quotes = [e for e in events(out) if "data" in e and "event" not in e]
    assert quotes
    for event in quotes:
        quote = json.loads(event["data"])
        assert quote["ticker"] in {"AAPL", "MSFT"}
        assert event["id"] == f"{quote['epoch']}:{quote['seq']}"
    code, out = run_curl(resume, server.port)
    (recovered, *_rest) = [e for e in events(out) if e.get("event") == "recovered"]
    assert json.loads(recovered["data"])["recovered"] is False  # the page's epoch is not ours
    code, out = run_curl(snapshot, server.port)
    assert {json.loads(e["data"])["ticker"] for e in events(out)[1:3]} == {"AAPL", "MSFT"}
    code, out = run_curl(refusal, server.port)
    assert code == 0
    assert out.startswith("HTTP/1.1 400")
    assert "DROP" in out


def test_the_browser_example_reads_events_and_their_ids_from_another_origin(
    page_server: tuple[str, Path], start_server: StartServer
) -> None:
    """
    The snippet in Chromium, on a page from another origin that --cors-origins allows:
    quote events arrive (the server echoes the origin), each with its position as
    ``lastEventId``.
    """
    from playwright.sync_api import ConsoleMessage, sync_playwright

    origin, folder = page_server
    server = start_server(None, cors_origins=origin, demo_rate=500)
    script = BROWSER.replace('"/sse/quotes', f'"http://127.0.0.1:{server.port}/sse/quotes')
    script += (
        "\nwindow.ids = [];"
        "\nsource.addEventListener('message', (e) => {"
        " const q = JSON.parse(e.data); window.ids.push(e.lastEventId === q.epoch + ':' + q.seq);"
        " });\n"
    )
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<body><script>\n{script}\n</script></body>"
    )
    lines: list[tuple[str, str]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def record(msg: ConsoleMessage) -> None:
                lines.append((msg.type, msg.text))

            page.on("console", record)
            page.goto(f"{origin}/index.html")
            page.wait_for_function("() => window.ids.length >= 5", timeout=20_000)
            ids = page.evaluate("window.ids")
        finally:
            browser.close()
    assert [kind for kind, _ in lines if kind == "error"] == []
    quotes = [text for _, text in lines if re.fullmatch(r"(AAPL|MSFT) \d+(\.\d+)?", text)]
    assert quotes  # the snippet's own console.log of each quote
    assert set(ids) == {True}  # every event's lastEventId is its quote's <epoch>:<seq>
