"""Every way a connection can end leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import socket

import psutil
import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.rawws import abort, raw_handshake
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import ConnectionClosed, open_ws

pytestmark = pytest.mark.anyio


def ready(server: ServerProcess) -> dict[str, object]:
    doc = json.loads(server.get("/ready")[1])
    assert isinstance(doc, dict)
    return doc


async def clean_close(server: ServerProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL"):
        pass


async def oversized(server: ServerProcess) -> None:
    async with open_ws(f"{server.ws_url}/ws") as ws:
        await ws.send("x" * 2048)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)


async def test_nothing_leaks_whatever_the_way_out(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Hundreds of connections closed, aborted, stalled or failed: gauges, hub and fds return."""
    server = start_server(
        redis_server,
        ws_max_size=1024,
        slow_client_timeout=1,
        close_timeout=1,
        max_connections_per_ip=0,  # hundreds of peers, all from 127.0.0.1
    )
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    await clean_close(server)  # warm up lazily created resources
    wait_until(lambda: ready(server)["connections"] == 0, what="warm-up closed")
    baseline = proc.num_fds()
    tasks = ready(server)["tasks"]

    for _ in range(4):
        await asyncio.gather(*(clean_close(server) for _ in range(25)))
    for _ in range(2):
        await asyncio.gather(*(oversized(server) for _ in range(25)))
    for _ in range(100):  # TCP reset right after the handshake
        abort(raw_handshake(server.port, "/v1/ws"))
    for _ in range(50):  # FIN without a close frame
        raw_handshake(server.port, "/ws/quotes?tickers=MSFT").close()
    for _ in range(50):  # garbage instead of a frame
        s = raw_handshake(server.port, "/ws/quotes")
        s.sendall(b"\x00\xff" * 8)
        s.close()
    for _ in range(20):  # abandoned in the middle of the HTTP request
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /ws/quotes HTTP/1.1\r\nHost: x\r\n")
    # stalled peers under load: never read, then killed by the server as slow consumers
    stalled = [raw_handshake(server.port, "/ws/quotes", rcvbuf=4096) for _ in range(20)]
    burst = [upstream_message("AAPL", i) for i in range(30_000)]
    await asyncio.to_thread(redis_server.publish_many, CHANNEL, burst)
    wait_until(
        lambda: server.metric("quotes_slow_consumer_closes_total") == len(stalled),
        timeout=60,
        what="stalled peers closed",
    )
    for s in stalled:
        s.close()

    wait_until(lambda: server.metric("quotes_ws_connections") == 0, timeout=30, what="gauge 0")
    doc = ready(server)
    assert (doc["connections"], doc["subscriptions"]) == (0, 0)
    wait_until(lambda: proc.num_fds() <= baseline, timeout=30, what="fds back to baseline")
    wait_until(lambda: ready(server)["tasks"] <= tasks, timeout=30, what="no task left behind")
    accepted = server.metric("quotes_ws_handshakes_total", 'outcome="accepted"')
    assert accepted == 1 + 100 + 50 + 100 + 50 + 50 + 20
    # the server still serves
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 42))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["volume"] == 42
