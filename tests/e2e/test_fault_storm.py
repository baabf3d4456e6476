"""
Hundreds of bad clients at once against one server: the healthy ones miss nothing,
and afterwards nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import jwt
import psutil
import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.rawws import UPGRADE_HEADERS, raw_handshake
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import (
    ConnectionClosed,
    collect_until,
    handshake_rejection,
    open_ws,
    wait_closed,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "storm-token-5b9e"
SECRET = "storm-secret-0123456789-0123456789-0123"
N_QUOTES = 30_000  # ~5.7 MB: more than a stalled reader's socket buffers absorb
TICKERS = ["AAPL", "MSFT", "GOOGL", "TSLA"]


def ready(server: ServerProcess) -> dict[str, int]:
    doc = json.loads(server.get("/ready")[1])
    assert isinstance(doc, dict)
    return doc


async def flooder(url: str) -> int | None:
    """Send frames far past the inbound rate; return the close code the server sent."""
    async with open_ws(url) as ws:
        with contextlib.suppress(ConnectionClosed):
            for _ in range(400):
                await ws.send(b"{}")  # binary: ignored, never answered
        closed = await wait_closed(ws, timeout=60)
    return closed.rcvd.code if closed.rcvd is not None else None


async def big_actions(url: str) -> tuple[str, int | None]:
    """
    A 2,000-ticker action (refused), then 1,000-ticker sets until the server closes:
    the error code of the first and the close code.
    """
    async with open_ws(url) as ws:
        await ws.send(json.dumps({"action": "set", "tickers": [f"X{i}" for i in range(2000)]}))
        first = json.loads(await ws.recv())
        big = json.dumps({"action": "set", "tickers": [f"X{i}" for i in range(1000)]})
        with contextlib.suppress(ConnectionClosed):
            for _ in range(10):
                await ws.send(big)
        closed = await wait_closed(ws, timeout=60)
    return first.get("code", ""), closed.rcvd.code if closed.rcvd is not None else None


async def half_handshake(port: int) -> bytes:
    """Send half a request and wait for the server to give up on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /ws/quotes HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


async def slow_body(port: int) -> bytes:
    """A request whose body trickles in: answered 408 at the request deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


async def huge_handshake(port: int) -> bytes:
    """A 60 kB request line: answered at once with 414."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        target = "/ws/quotes?tickers=" + "ABC," * 15_000
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{UPGRADE_HEADERS}\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


async def test_fault_storm_leaves_healthy_clients_whole_and_nothing_behind(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    200 floods, 200 half handshakes, 50 huge handshakes, 50 request bodies that
    trickle in, 50 stalled readers, 40 never-reading resumes, 20 clients of 1,000-
    and 2,000-ticker actions and an expired token, all at once: healthy clients get
    every quote in order, and connections, fds and tasks return to their baseline.
    """
    server = start_server(
        redis_server,
        auth_tokens=TOKEN,
        jwt_secret=SECRET,
        max_connections_per_ip=0,
        ws_inbound_rate=20,
        ws_inbound_burst=40,
        handshake_timeout=3,
        http_request_timeout=3,
        slow_client_timeout=3,
        close_timeout=2,
        buffer_size=N_QUOTES + 10,
    )
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    base = f"{server.ws_url}/ws/quotes"
    auth = f"access_token={TOKEN}"
    async with open_ws(f"{base}?{auth}"):  # warm up lazily created resources
        pass
    async with open_ws(f"{base}?seq=1&{auth}") as ws:  # the position before the storm
        redis_server.publish(CHANNEL, upstream_message("START", 0))
        start = json.loads(await ws.recv())
    wait_until(lambda: ready(server)["connections"] == 0, what="warm-up closed")
    fds, tasks = proc.num_fds(), ready(server)["tasks"]

    async with (
        open_ws(f"{base}?{auth}", max_queue=None) as all_tickers,
        open_ws(f"{base}?tickers=AAPL,END&{auth}", max_queue=None) as one_ticker,
    ):
        stalled = [raw_handshake(server.port, f"/ws/quotes?{auth}", rcvbuf=4096) for _ in range(50)]
        since = f"since={start['epoch']}:{start['seq']}&{auth}"
        resuming = [
            raw_handshake(server.port, f"/ws/quotes?{since}", rcvbuf=4096) for _ in range(20)
        ]
        # expired by far more than the JWT leeway (5 s by default)
        expired = jwt.encode({"exp": int(time.time()) - 3600}, SECRET, algorithm="HS256")
        messages = [upstream_message(TICKERS[i % 4], i) for i in range(N_QUOTES)]
        messages.append(upstream_message("END", N_QUOTES))
        publishing = asyncio.create_task(
            asyncio.to_thread(redis_server.publish_many, CHANNEL, messages)
        )
        storm = asyncio.gather(
            *(flooder(f"{base}?tickers=MSFT&{auth}") for _ in range(200)),
            *(half_handshake(server.port) for _ in range(200)),
            *(huge_handshake(server.port) for _ in range(50)),
            *(slow_body(server.port) for _ in range(50)),
            *(big_actions(f"{base}?tickers=MSFT&{auth}") for _ in range(20)),
        )
        # resumes that start while the quotes pour in: a replay, or recovered:false
        resuming += [
            raw_handshake(server.port, f"/ws/quotes?{since}", rcvbuf=4096) for _ in range(20)
        ]
        got_all, got_one = await asyncio.gather(
            collect_until(all_tickers, lambda q: q["ticker"] == "END", timeout=240),
            collect_until(one_ticker, lambda q: q["ticker"] == "END", timeout=240),
        )
        await publishing
        results = await storm
        status, _h, _b = await handshake_rejection(f"{base}?access_token={expired}")
        assert status == 401

        assert [q["volume"] for q in got_all] == list(range(N_QUOTES + 1))
        assert [q["volume"] for q in got_one] == [*range(0, N_QUOTES, 4), N_QUOTES]
        assert results[:200] == [1008] * 200
        assert all(r.startswith(b"HTTP/1.1 408") for r in results[200:400])
        assert all(r.startswith(b"HTTP/1.1 414") for r in results[400:450])
        assert all(r.startswith(b"HTTP/1.1 408") for r in results[450:500])
        assert results[500:] == [("too_many_tickers", 1008)] * 20
        wait_until(
            lambda: (
                server.metric("quotes_slow_consumer_closes_total") == len(stalled) + len(resuming)
            ),
            timeout=60,
            what="stalled readers closed",
        )
        for s in stalled + resuming:
            s.close()
        wait_until(lambda: ready(server)["connections"] == 2, timeout=30, what="only healthy left")

    wait_until(lambda: ready(server)["connections"] == 0, timeout=30, what="all closed")
    assert ready(server)["subscriptions"] == 0
    wait_until(lambda: proc.num_fds() <= fds, timeout=30, what="fds back to baseline")
    wait_until(lambda: ready(server)["tasks"] <= tasks, timeout=30, what="tasks back to baseline")
    assert server.metric("quotes_limit_hits_total", 'limit="inbound_rate"') == 220
    assert server.metric("quotes_limit_hits_total", 'limit="handshake_timeout"') == 200
    assert server.metric("quotes_limit_hits_total", 'limit="url_too_long"') == 50
    assert server.metric("quotes_limit_hits_total", 'limit="request_timeout"') == 50
    assert server.metric("quotes_ws_handshakes_total", 'outcome="unauthorized"') == 1
    assert TOKEN not in server.log()
