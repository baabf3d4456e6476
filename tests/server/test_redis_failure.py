"""Redis failing under a running server: grace, 1011, 503, recovery."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import handshake_rejection, open_ws, recv_json, wait_closed

pytestmark = pytest.mark.anyio


async def assert_recovers(redis: RedisServer, server: ServerProcess) -> None:
    server.wait_ready(timeout=30)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        redis.publish(CHANNEL, upstream_message("AAPL", 99))
        assert (await recv_json(ws))["volume"] == 99


async def test_redis_killed_closes_clients_with_1011_then_recovers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Redis killed: after the grace period clients get 1011, handshakes 503; then recovery."""
    server = start_server(redis_server, grace_period=1)
    async with open_ws(f"{server.ws_url}/v1/ws/quotes?tickers=AAPL") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(ws))["volume"] == 1
        redis_server.stop()
        closed = await wait_closed(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1011, "Internal server error")
    status, headers, _ = await handshake_rejection(f"{server.ws_url}/ws/quotes")
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert json.loads(server.get("/ready")[1])["upstream"] == "down"
    assert server.get("/health")[0] == 200  # the process itself is fine
    redis_server.start()
    await assert_recovers(redis_server, server)
    assert server.metric("quotes_upstream_reconnects_total") >= 1
    assert server.metric("quotes_ws_disconnects_total", 'code="1011"') == 1


async def test_short_outage_within_grace_keeps_clients(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A Redis restart shorter than the grace period does not disconnect anyone."""
    server = start_server(redis_server, grace_period=30)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        redis_server.restart()
        wait_until(
            lambda: server.metric("quotes_upstream_reconnects_total") >= 1,
            timeout=20,
            what="re-subscription",
        )
        redis_server.publish(CHANNEL, upstream_message("AAPL", 5))
        assert (await recv_json(ws))["volume"] == 5
        assert json.loads(server.get("/ready")[1])["connections"] == 1
    # no WebSocket closed with 1011 (the SSE series lists its codes at zero)
    assert not re.search(
        r'quotes_ws_disconnects_total\{code="1011"\} [1-9]', server.get("/metrics")[1]
    )


async def test_silently_dead_redis_is_detected(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A Redis that stops answering (SIGSTOP, socket still open) is detected by PING."""
    server = start_server(
        redis_server, grace_period=1, redis_ping_interval=0.5, redis_pong_timeout=1, redis_timeout=1
    )
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        os.kill(pid, signal.SIGSTOP)
        try:
            closed = await wait_closed(ws)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1011
    assert "no PONG" in server.log()
    await assert_recovers(redis_server, server)
