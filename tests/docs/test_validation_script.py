"""The contract's validation script works against the real server."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.processes import ROOT, RedisServer, free_port
from tests.helpers.server import StartServer

SCRIPT = ROOT / "scripts" / "validation" / "test_websocket_health.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_passes_against_the_demo_feed(start_server: StartServer) -> None:
    """Health and first message on /ws: exit 0."""
    server = start_server(None)
    out = run("--url", f"{server.ws_url}/ws")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ Health check OK" in out.stdout
    assert "✓ WebSocket handshake successful" in out.stdout
    assert '✓ Received first message: {"ticker":' in out.stdout


def test_fails_when_nothing_listens() -> None:
    """No server: exit 1 with a clear line, no traceback."""
    out = run("--url", f"ws://127.0.0.1:{free_port()}/ws", "--open-timeout", "2")
    assert out.returncode == 1
    assert "✗ Health check failed" in out.stdout
    assert "Traceback" not in out.stderr


def test_fails_on_rejected_handshake(redis_server: RedisServer, start_server: StartServer) -> None:
    """A 400 handshake is reported with its status: exit 1."""
    server = start_server(redis_server)
    out = run("--url", f"{server.ws_url}/ws?tickers=bad;symbol")
    assert out.returncode == 1
    assert "✗ Handshake failed: 400" in out.stdout


def test_fails_when_no_message_arrives(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Connected but silent (nobody publishes): exit 1 after the message timeout."""
    server = start_server(redis_server)
    out = run("--url", f"{server.ws_url}/ws", "--message-timeout", "1")
    assert out.returncode == 1
    assert "✗ Timeout waiting for data" in out.stdout
