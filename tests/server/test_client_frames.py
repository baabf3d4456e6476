"""What clients send: ignored when sane, closed with 1009 when oversized; pings work."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.processes import RedisServer
from tests.helpers.server import CHANNEL, StartServer, quote_bytes
from tests.helpers.ws import ConnectionClosed, open_ws, recv_json

pytestmark = pytest.mark.anyio


async def test_client_messages_are_ignored_and_pings_answered(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Text, JSON and binary messages from a client change nothing; pings get pongs."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        await ws.send('{"action": "subscribe", "tickers": ["MSFT"]}')
        await ws.send("this is not json")
        await ws.send(b"\x00\x01binary")
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)
        redis_server.publish_many(CHANNEL, [quote_bytes("MSFT", 1), quote_bytes("AAPL", 2)])
        assert (await recv_json(ws))["volume"] == 2
    assert "non-JSON message (ignored): this is not json" in server.log()


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
        redis_server.publish(CHANNEL, quote_bytes("AAPL", 3))
        assert (await recv_json(bystander))["volume"] == 3
