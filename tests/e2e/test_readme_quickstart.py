"""
A newcomer's first minutes, as the README writes them: `make run` serves the dashboard
at the README's URL, and `make watch` in a second terminal prints the stream.

Both run exactly as written (one environment variable added: QUOTES_PORT, a free port,
which both honour), each in its own process group, stopped by that group's id.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.helpers.processes import ROOT, free_port, wait_until
from tests.helpers.readme import README, Command, block_commands

QUOTE_LINE = re.compile(
    r"^(?P<ticker>[A-Z.^=/-]+)\s+(?P<close>[\d.]+)\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+-?[\d.]+ ms$"
)
DASHBOARD_URL = re.compile(r"<(http://127\.0\.0\.1:8000/[^>]*)>")


def newcomer_env(port: int) -> dict[str, str]:
    """A plain shell's environment plus QUOTES_PORT: no outer make, venv or QUOTES_* state."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("QUOTES_")}
    return {**env, "QUOTES_PORT": str(port)}


@contextlib.contextmanager
def started(
    command: Command, env: dict[str, str], stdout: IO[str] | int
) -> Iterator[subprocess.Popen[str]]:
    """``command`` in a new process group (make, uv and the program), stopped by group id."""
    proc = subprocess.Popen(
        list(command.argv),
        cwd=ROOT,
        env={**env, **command.env},
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is subprocess.PIPE else stdout,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group this test started, and only it
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def lines_of(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines as they come, from a thread that closes the pipe at EOF."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


@pytest.mark.timeout(240)
def test_make_run_then_the_dashboard_and_make_watch(tmp_path: Path) -> None:
    """The dashboard answers at the README's URL and `make watch` prints AAPL and MSFT quotes."""
    commands = {c.text: c for c in block_commands()}
    run, watch = commands["make run"], commands["make watch"]
    port = free_port()
    env = newcomer_env(port)
    (dashboard,) = set(DASHBOARD_URL.findall(README.read_text()))
    dashboard = dashboard.replace(":8000/", f":{port}/")
    with (tmp_path / "run.log").open("w") as log, started(run, env, log) as server:
        wait_until(
            lambda: server.poll() is not None or answers(f"http://127.0.0.1:{port}/health"),
            timeout=120,
            what="make run to serve /health",
        )
        assert server.poll() is None, (tmp_path / "run.log").read_text()
        with urllib.request.urlopen(dashboard, timeout=10) as page:
            assert page.headers.get_content_type() == "text/html"
            assert b"<script" in page.read()

        with started(watch, env, subprocess.PIPE) as watcher:
            output, reader = lines_of(watcher)
            seen: list[str] = []
            tickers: set[str] = set()
            deadline = time.monotonic() + 90
            while tickers != {"AAPL", "MSFT"}:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "no AAPL and MSFT quotes from make watch:\n" + "\n".join(seen)
                try:
                    line = output.get(timeout=remaining)
                except queue.Empty:
                    continue
                seen.append(line)
                if quote := QUOTE_LINE.match(line):
                    tickers.add(quote["ticker"])
            assert watcher.poll() is None, "\n".join(seen)
        reader.join(timeout=10)  # the group is gone, so the pipe is at EOF
        assert not reader.is_alive()
    quotes = [m["ticker"] for line in seen if (m := QUOTE_LINE.match(line))]
    assert set(quotes) == {"AAPL", "MSFT"}, seen  # the README's tickers, and no others
