"""What clients send: answered or ignored, closed with 1009 when oversized; pings work."""

from __future__ import annotations

import asyncio
import re

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, wait_until
from tests.helpers.rawws import raw_handshake, read_until_closed
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import ConnectionClosed, open_ws, recv_json

pytestmark = pytest.mark.anyio


async def test_client_messages_never_break_the_stream_and_pings_are_answered(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Binary frames are ignored, bad text gets an error frame, pings get pongs."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        await ws.send("this is not json")
        await ws.send(b"\x00\x01binary")
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)
        error = await recv_json(ws)
        assert error["event"] == "error"
        assert error["code"] == "invalid_json"
        redis_server.publish_many(
            CHANNEL, [upstream_message("MSFT", 1), upstream_message("AAPL", 2)]
        )
        assert (await recv_json(ws))["volume"] == 2
    assert "sent an invalid message (invalid_json): this is not json" in server.log()


async def test_oversized_client_frame_closes_with_1009(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A client frame over ws_max_size closes that connection with 1009, nobody else's."""
    server = start_server(redis_server, ws_max_size=1024)
    async with (
        open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as bystander,
        open_ws(f"{server.ws_url}/ws/quotes") as offender,
    ):
        await offender.send("x" * 4096)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(offender.recv(), 10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009
        redis_server.publish(CHANNEL, upstream_message("AAPL", 3))
        assert (await recv_json(bystander))["volume"] == 3


async def test_keepalive_pings_drop_a_peer_that_never_answers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Keepalive pings are on: a peer that never answers them is disconnected."""
    server = start_server(redis_server, ws_ping_interval=0.5, ws_ping_timeout=0.5, close_timeout=1)
    silent = raw_handshake(server.port, "/ws/quotes")
    try:
        # a ping frame (opcode 0x9) arrives first; nothing is answered, so the server
        # closes (1011 "keepalive ping timeout") and then drops the socket
        first = silent.recv(2)
        assert first[0] & 0x0F == 0x9
        read_until_closed(silent, timeout=30)
    finally:
        silent.close()
    wait_until(lambda: server.metric("quotes_ws_connections") == 0, what="connection removed")


async def test_connect_and_disconnect_are_logged_with_client_id(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Each connection logs its client_id, address, filter, close code and counts."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=msft,aapl") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        await recv_json(ws)
    wait_until(lambda: "disconnected" in server.log(), what="disconnect log line")
    log = server.log()
    assert re.search(
        r"client c1 connected from 127\.0\.0\.1:\d+ path=/ws/quotes tickers=AAPL,MSFT", log
    )
    assert "client c1 disconnected code=1000 reason='' sent=1 conflated=0" in log
