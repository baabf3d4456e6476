"""Handshake rejections are real HTTP responses a client can see."""

from __future__ import annotations

import json

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, free_port, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import handshake_rejection, open_ws, recv_json

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("tickers=AAPL;DROP", "invalid ticker 'AAPL;DROP'"),
        ("tickers=" + ",".join(f"T{i}" for i in range(1001)), "too many tickers"),
        ("tickers=AAPL&tickers=MSFT", "give tickers once"),
        ("mode=fastest", "invalid mode 'fastest'"),
    ],
)
async def test_bad_query_is_400_with_reason(
    redis_server: RedisServer, start_server: StartServer, query: str, reason: str
) -> None:
    """An invalid query gets HTTP 400 whose body says what is wrong."""
    server = start_server(redis_server)
    status, _headers, body = await handshake_rejection(f"{server.ws_url}/ws/quotes?{query}")
    assert status == 400
    assert reason in body
    assert server.metric("quotes_ws_handshakes_total", 'outcome="bad_request"') == 1


async def test_origin_checked_against_cors_origins(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A disallowed Origin gets 403; an allowed one and no Origin at all are accepted."""
    server = start_server(redis_server, cors_origins="https://app.example,http://localhost:3000")
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    status, _h, body = await handshake_rejection(url, origin="https://evil.example")
    assert status == 403
    assert "https://evil.example" in body
    status, _h, _b = await handshake_rejection(url, origin="http://localhost:3001")
    assert status == 403
    for origin in ("https://app.example", "http://localhost:3000", None):
        async with open_ws(url, origin=origin) as ws:
            redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
            assert (await recv_json(ws))["ticker"] == "AAPL"
    assert server.metric("quotes_ws_handshakes_total", 'outcome="origin_forbidden"') == 2
    assert "effective cors_origins: ['https://app.example', 'http://localhost:3000']" in (
        server.log()
    )


async def test_redis_down_at_startup_is_503_then_recovers(start_server: StartServer) -> None:
    """With Redis down the server starts, answers 503 + Retry-After, and recovers by itself."""
    redis = RedisServer(port=free_port())  # not started yet
    server = start_server(redis, wait_ready=False, retry_after=7)
    status, body = server.get("/ready")
    assert status == 503
    assert json.loads(body)["upstream"] in ("connecting", "down")
    status, headers, text = await handshake_rejection(f"{server.ws_url}/ws/quotes")
    assert status == 503
    assert headers.get("Retry-After") == "7"
    assert "unavailable" in text
    redis.start()
    try:
        server.wait_ready(timeout=20)
        async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
            redis.publish(CHANNEL, upstream_message("AAPL", 3))
            assert (await recv_json(ws))["volume"] == 3
        wait_until(
            lambda: (
                server.metric("quotes_ws_handshakes_total", 'outcome="upstream_unavailable"') == 1
            ),
            what="503 counted",
        )
    finally:
        redis.stop()
