"""
The dashboard in headless Chromium: measure its frame rate under load, or take the
docs' screenshot.

``fps`` starts ``quotes-server`` on the demo feed (``--demo-rate``/``--demo-tickers``,
default 3,000 quotes/s over 300 tickers) unless ``--url`` points at a running server,
opens the dashboard for all tickers, lets it warm up, then counts
``requestAnimationFrame`` callbacks and the longest gap between two of them for
``--seconds``. Prints one JSON object. A figure, not a test: nothing asserts timing.

``screenshot`` opens a watchlist on a gentle demo feed and writes a PNG
(``make screenshot`` writes docs/img/dashboard.png).

    uv run python scripts/dashboard.py fps --seconds 20
    uv run python scripts/dashboard.py screenshot docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking"]  # fmt: skip

# counts frames in the page itself, independent of the dashboard's own loop
PROBE = """
(seconds) => new Promise((resolve) => {
  const d = window.dashboard.stats;
  const start = performance.now(), received0 = d.received, painted0 = d.rowsPainted;
  let frames = 0, last = start, worst = 0;
  const tick = (t) => {
    frames += 1; worst = Math.max(worst, t - last); last = t;
    if (t - start < seconds * 1000) { requestAnimationFrame(tick); return; }
    const elapsed = (t - start) / 1000;
    resolve({frames, elapsed, fps: frames / elapsed, worst_frame_ms: worst,
             quotes_per_s: (d.received - received0) / elapsed,
             rows_painted_per_s: (d.rowsPainted - painted0) / elapsed,
             rows: window.dashboard.rows.size, latency_p50_ms: d.lastP50,
             latency_p99_ms: d.lastP99, state: window.dashboard.state()});
  };
  requestAnimationFrame(tick);
})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no server ready at {url}")
        time.sleep(0.1)


SCREENSHOT_TICKERS = "AAPL,MSFT,GOOGL,AMZN,NVDA,META,TSLA,JPM,V,XOM,BRK.B,^GSPC"


def _server(args: argparse.Namespace) -> tuple[str, subprocess.Popen[bytes] | None]:
    if args.url:
        return args.url.rstrip("/"), None
    port = _free_port()
    env = {**os.environ, "QUOTES_LOG_LEVEL": "warning"}
    argv = [
        *(sys.executable, "-m", "quotes_server", "--demo", "--port", str(port)),
        *("--demo-rate", str(args.demo_rate), "--demo-tickers", str(args.demo_tickers)),
    ]
    return f"http://127.0.0.1:{port}", subprocess.Popen(argv, env=env, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["fps", "screenshot"])
    parser.add_argument("output", nargs="?", default="docs/img/dashboard.png",
                        help="PNG to write (screenshot)")  # fmt: skip
    parser.add_argument("--url", help="base URL of a running server (else one is started)")
    parser.add_argument("--demo-rate", type=float)
    parser.add_argument("--demo-tickers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15, help="measurement (fps)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds before measuring")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if args.demo_rate is None:
        args.demo_rate = 3000 if args.what == "fps" else 400

    from playwright.sync_api import sync_playwright

    url, proc = _server(args)
    try:
        _wait_ready(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                if args.what == "fps":
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(url + "/dashboard?tickers=*")
                    # predicates are functions: Playwright evals a string predicate on
                    # every poll, which the page's Content-Security-Policy refuses
                    page.wait_for_function(
                        "() => window.dashboard && window.dashboard.rows.size > 0"
                    )
                    page.wait_for_timeout(args.warmup * 1000)
                    result = page.evaluate(PROBE, args.seconds)
                    result.update(demo_rate=args.demo_rate, demo_tickers=args.demo_tickers)
                    print(json.dumps(result, indent=2))
                else:
                    page = browser.new_page(viewport={"width": 1200, "height": 600})
                    page.goto(f"{url}/dashboard?tickers={SCREENSHOT_TICKERS}")
                    # enough history for the sparklines and the latency figures
                    page.wait_for_function(
                        "() => window.dashboard.rows.size >= 12"
                        " && window.dashboard.info() !== null"
                        " && window.dashboard.stats.lastP99 !== null"
                        " && [...window.dashboard.rows.values()].every(r => r.n >= 12)",
                        timeout=60_000,
                    )
                    out = Path(args.output)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out))
                    print(f"wrote {out}")
            finally:
                browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
