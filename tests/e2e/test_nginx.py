"""
The shipped deploy/nginx.conf, run by the distribution's nginx in front of two
quotes-server processes on one private Redis: the contract works through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quotes_client import QuotesClient
from quotes_client.events import ConnectionEvent, Disconnected
from tests.helpers.processes import (
    ROOT,
    RedisServer,
    ServerProcess,
    eventually,
    free_port,
    wait_until,
)
from tests.helpers.publishing import publishing
from tests.helpers.server import StartServer
from tests.helpers.ws import collect_until, handshake_rejection, open_ws

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CONF = ROOT / "deploy" / "nginx.conf"
GOOD_ORIGIN = "http://quotes.example"

pytestmark = pytest.mark.anyio


def nginx_config(folder: Path, listen: int, upstreams: tuple[int, int]) -> str:
    """deploy/nginx.conf with loopback ports and private paths; each edit must apply once."""
    text = CONF.read_text()
    edits = {
        "worker_processes auto;": "daemon off;\nworker_processes 1;",
        "pid /var/run/nginx.pid;": f"pid {folder}/nginx.pid;",
        "error_log /dev/stderr warn;": f"error_log {folder}/error.log warn;",
        "access_log /dev/stdout quotes;": f"access_log {folder}/access.log quotes;\n"
        + "".join(
            f"    {kind}_temp_path {folder}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        "server quotes1:8000": f"server 127.0.0.1:{upstreams[0]}",
        "server quotes2:8000": f"server 127.0.0.1:{upstreams[1]}",
        "listen 8080;": f"listen 127.0.0.1:{listen};",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} exactly once"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx(folder: Path, upstreams: tuple[int, int]) -> Iterator[int]:
    """Run nginx (foreground, own prefix and pid file) on a free port; stop it by PID."""
    if NGINX is None:
        hint = "nginx not found: install it with `apt-get install nginx`"
        if os.environ.get("CI"):
            pytest.fail(hint, pytrace=False)
        pytest.skip(hint)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_config(folder, port, upstreams))
    argv = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                log = (folder / "error.log").read_text(errors="replace")
                raise AssertionError(f"nginx exited with {proc.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(up, timeout=15, what="nginx answering /health")
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # fast shutdown: open tunnels are cut
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def connections(server: ServerProcess) -> float:
    return server.metric("quotes_ws_connections")


async def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Await ``condition`` (it reads other processes), failing at the deadline."""
    await eventually(condition, timeout=timeout, interval=0.05, what=what)


@pytest.mark.slow
async def test_contract_through_nginx(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Through nginx: handshake, filter, X-Forwarded-For, 403 bad origin, 1001 and failover."""
    settings = {"cors_origins": GOOD_ORIGIN, "trusted_proxies": "127.0.0.1"}
    one = start_server(redis_server, **settings)
    two = start_server(redis_server, **settings)
    with publishing(redis_server, ["AAPL", "MSFT"]), nginx(tmp_path, (one.port, two.port)) as port:
        base = f"ws://127.0.0.1:{port}/ws/quotes"

        # handshake and filtering (MSFT is published too), with the client's address forwarded
        first = 0
        async with open_ws(
            f"{base}?tickers=AAPL",
            origin=GOOD_ORIGIN,
            additional_headers={"X-Forwarded-For": "203.0.113.9"},
        ) as ws:
            quotes = await collect_until(ws, lambda _q: True, timeout=20)
            first = quotes[0]["volume"]
            quotes += await collect_until(ws, lambda q: q["volume"] >= first + 5, timeout=20)
        assert {q["ticker"] for q in quotes} == {"AAPL"}
        assert "connected from 203.0.113.9" in one.log() + two.log()

        # origin policy: nginx passes Origin through untouched
        status, _headers, body = await handshake_rejection(base, origin="http://evil.example")
        assert status == 403
        assert "not allowed" in body

        # rolling restart: SIGTERM the instance holding the client; it reconnects to the other
        events: list[ConnectionEvent] = []
        client = QuotesClient(base, tickers=["AAPL"], origin=GOOD_ORIGIN, on_event=events.append)
        async with client:
            await client.wait_connected()
            await poll(lambda: connections(one) + connections(two) == 1, 15, "one connection")
            holder, other = (one, two) if connections(one) == 1 else (two, one)
            before = client.stats.received
            await asyncio.to_thread(holder.stop)  # SIGTERM by PID, as systemd or compose would
            await poll(lambda: any(isinstance(e, Disconnected) for e in events), 20, "a disconnect")
            codes = [e.code for e in events if isinstance(e, Disconnected)]
            assert codes == [1001]
            await poll(lambda: connections(other) == 1, 30, "reconnected to the other instance")
            after = client.stats.received
            await poll(lambda: client.stats.received > after, 20, "quotes after the failover")
            assert after >= before


def fetch(url: str) -> tuple[int, bytes]:
    """``GET url``: the status and body (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_nginx_hides_operator_endpoints_and_tokens(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """
    Through nginx, /metrics and /ready answer 404 (the servers behind it serve both on
    their own port here), and a token in the query string never reaches the access log.
    """
    one = start_server(redis_server)
    two = start_server(redis_server)
    assert one.get("/metrics")[0] == 200  # so a 404 below is nginx's doing
    with nginx(tmp_path, (one.port, two.port)) as port:
        base = f"http://127.0.0.1:{port}"
        for path in ("/metrics", "/ready", "/metrics?x=1"):
            status, body = await asyncio.to_thread(fetch, base + path)
            assert status == 404, path
            assert b"nginx" in body  # nginx's own page: never sent upstream
        status, _body = await asyncio.to_thread(fetch, f"{base}/health?access_token=SECRET-1")
        assert status == 200
        async with open_ws(f"ws://127.0.0.1:{port}/ws/quotes?tickers=AAPL&access_token=SECRET-2"):
            pass
        access = tmp_path / "access.log"

        def logged() -> bool:
            text = access.read_text() if access.exists() else ""
            return any("/ws/quotes" in line and '" 101 ' in line for line in text.splitlines())

        # nginx writes a tunnel's line when it closes
        await poll(logged, 15, "the WebSocket request in the access log")
        text = access.read_text()
    assert '"GET /health HTTP/1.1" 200' in text
    assert '"GET /metrics HTTP/1.1" 404' in text
    assert "SECRET" not in text
    assert "access_token" not in text
    assert '"GET /ws/quotes HTTP/1.1" 101' in text
    assert (
        one.metric("quotes_ws_handshakes_total", 'outcome="accepted"')
        + two.metric("quotes_ws_handshakes_total", 'outcome="accepted"')
        == 1
    )
