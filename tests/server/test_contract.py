"""The WebSocket contract over real Redis: endpoints, filtering, health."""

from __future__ import annotations

import asyncio
import json

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import collect_until, open_ws, recv_json

pytestmark = pytest.mark.anyio

PATHS = ["/ws/quotes", "/ws", "/v1/ws/quotes", "/v1/ws"]


async def test_health_is_exactly_the_contract(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """GET /health answers exactly the contract's body."""
    server = start_server(redis_server)
    status, body = server.get("/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "version": "0.1.0", "repository": "opa-quotes-api"}
    status, body = server.get("/ready")
    assert status == 200
    assert json.loads(body)["upstream"] == "up"


@pytest.mark.parametrize("path", PATHS)
async def test_every_endpoint_streams_filtered_quotes(
    redis_server: RedisServer, start_server: StartServer, path: str
) -> None:
    """All four endpoints deliver canonical quotes of the requested tickers only."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}{path}?tickers=aapl") as ws:
        redis_server.publish_many(
            CHANNEL,
            [upstream_message("MSFT", 1), upstream_message("aapl", 2), upstream_message("TSLA", 3)],
        )
        raw = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(raw, str)
    doc = json.loads(raw)
    assert (doc["ticker"], doc["volume"]) == ("AAPL", 2)
    assert list(doc) == [
        "ticker", "timestamp", "open", "high", "low", "close", "volume", "bid", "ask",
    ]  # fmt: skip
    assert doc["timestamp"].endswith("Z")
    assert raw == raw.replace(" ", "")  # compact separators


async def test_concurrent_clients_get_exactly_their_filters(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Several clients with different filters each receive exactly their quotes, in order."""
    server = start_server(redis_server)
    filters = {
        "apple": "AAPL,END",
        "pair": "msft,googl,END",
        "star": "*",
        "all": None,
        "index": "^GSPC,BRK.B,END",
    }
    tickers = ["AAPL", "MSFT", "GOOGL", "TSLA", "^GSPC", "BRK.B"]
    messages = [upstream_message(tickers[i % len(tickers)], i) for i in range(600)]
    messages.append(upstream_message("END", 10_000))
    conns = {}
    for name, f in filters.items():
        query = "" if f is None else f"?tickers={f}"
        conns[name] = await open_ws(f"{server.ws_url}/ws/quotes{query}")
    try:
        redis_server.publish_many(CHANNEL, messages)
        results = await asyncio.gather(
            *(collect_until(ws, lambda q: q["ticker"] == "END") for ws in conns.values())
        )
    finally:
        for ws in conns.values():
            await ws.close()
    for (name, f), got in zip(filters.items(), results, strict=True):
        wanted = None if f in (None, "*") else {t.upper() for t in f.split(",")}
        expected = [
            (json.loads(m)["ticker"], json.loads(m)["volume"])
            for m in messages
            if wanted is None or json.loads(m)["ticker"] in wanted
        ]
        assert [(q["ticker"], q["volume"]) for q in got] == expected, name


async def test_unknown_query_parameters_are_ignored(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Extra query parameters do not change the handshake or the stream."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&token=x&foo") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 7))
        assert (await recv_json(ws))["volume"] == 7


async def test_latest_mode_is_opt_in(redis_server: RedisServer, start_server: StartServer) -> None:
    """?mode=latest is accepted and streams quotes like the default mode."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&mode=latest") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 8))
        assert (await recv_json(ws))["volume"] == 8


async def test_demo_feed_streams_without_redis(start_server: StartServer) -> None:
    """With no Redis URL the server streams its built-in demo feed."""
    server = start_server(None)
    status, body = server.get("/ready")
    assert status == 200
    assert json.loads(body)["source"] == "demo"
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT") as ws:
        quotes = [await recv_json(ws) for _ in range(3)]
    assert {q["ticker"] for q in quotes} <= {"AAPL", "MSFT"}
    assert all(q["bid"] < q["ask"] for q in quotes)
    assert "DEMO feed" in server.log()


async def test_per_message_deflate_when_enabled(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """With deflate enabled and negotiated, quotes still arrive intact (ordinary send path)."""
    server = start_server(redis_server, ws_per_message_deflate="true")
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        redis_server.publish_many(CHANNEL, [upstream_message("AAPL", i) for i in range(20)])
        assert [(await recv_json(ws))["volume"] for _ in range(20)] == list(range(20))
    assert "raw_frames=False" in server.log()


async def test_deflate_off_by_default_and_frames_prebuilt(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """By default no compression is negotiated and connections get pre-built frames."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(ws))["volume"] == 1
    assert "raw_frames=True" in server.log()
