"""
``--internal-port``: /metrics and /ready (and /health) on a port of their own, gone
from the public port; the default keeps them on the public port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.helpers.processes import (
    ROOT,
    RedisServer,
    ServerProcess,
    free_port,
    python_module,
    wait_until,
)
from tests.helpers.rawws import exchange, status_of
from tests.helpers.server import StartServer
from tests.helpers.ws import open_ws

pytestmark = pytest.mark.anyio


def get(port: int, path: str) -> tuple[int, str]:
    """``GET http://127.0.0.1:port/path``: the status and body (errors included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def refuses(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


async def test_operator_endpoints_move_to_the_internal_port(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """/metrics and /ready answer on the internal port and 404 on the public one; both stop."""
    internal = free_port()
    server = start_server(redis_server, internal_port=internal, wait_ready=False)
    wait_until(lambda: get(internal, "/ready")[0] == 200, what="internal /ready = 200")
    ready = json.loads(get(internal, "/ready")[1])
    assert ready["upstream"] == "up"
    assert get(internal, "/health") == (200, server.get("/health")[1])
    for path in ("/metrics", "/ready"):
        assert server.get(path)[0] == 404, path
    assert server.get("/health")[0] == 200  # load balancers still check the public port
    assert server.get("/")[0] == 200  # the dashboard stays
    assert server.get("/info") == (200, '{"demo":false}')  # and so does its banner's source
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL"):
        wait_until(
            lambda: sample(get(internal, "/metrics")[1], "quotes_ws_connections") == 1,
            what="the public connection counted on the internal port",
        )
    # the request-head limits hold on the internal port too
    long_target = b"GET /metrics?" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status_of(exchange(internal, long_target)) == 414
    assert f"internal endpoints /metrics, /ready, /health on http://127.0.0.1:{internal}" in (
        server.log()
    )
    server.stop()  # SIGTERM: uvicorn shuts down, then re-raises the signal it caught
    log = server.log()
    assert "Finished server process" in log  # the lifespan shutdown (ours) completed
    assert "Traceback" not in log
    assert "ERROR" not in log
    assert refuses(internal)


def test_default_keeps_them_on_the_public_port(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Without --internal-port, /metrics and /ready answer on the public port as before."""
    server = start_server(redis_server)
    assert server.get("/ready")[0] == 200
    status, body = server.get("/metrics")
    assert status == 200
    assert "quotes_ws_connections" in body


def run_to_exit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m quotes_server args`` expecting it to exit on its own."""
    return subprocess.run(
        python_module("quotes_server", *args),
        cwd=ROOT,
        env={**ServerProcess([]).env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_several_workers_are_refused(redis_server: RedisServer) -> None:
    """--internal-port with --workers 2 stops at start-up with a message saying why."""
    out = run_to_exit(
        "--workers", "2",
        "--internal-port", str(free_port()),
        "--redis-url", redis_server.url,
        "--port", str(free_port()),
    )  # fmt: skip
    assert out.returncode != 0
    assert "internal_port" in out.stderr
    assert "needs workers=1" in out.stderr
    assert "Traceback" not in out.stderr


def test_internal_port_in_use_stops_the_start(redis_server: RedisServer) -> None:
    """An internal port that is taken fails the start-up, naming the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_to_exit(
            "--internal-port", str(port),
            "--redis-url", redis_server.url,
            "--port", str(free_port()),
        )  # fmt: skip
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert f"cannot listen on the internal port 127.0.0.1:{port}" in log
    assert "Application startup failed" in log
