"""Every handshake gets a prompt answer; caps, inbound rates and the Origin rules hold."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.rawws import exchange, read_all, status_of, upgrade_request
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.uvicorn import PROTECTED, AnsweringServer, uvicorn_factory
from tests.helpers.ws import (
    ConnectionClosed,
    handshake_rejection,
    open_ws,
    recv_json,
    wait_closed,
)

pytestmark = pytest.mark.anyio


def _tickers(n: int) -> str:
    return ",".join(f"T{i}" for i in range(n))


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        # the two sizes reported from outside: no answer at all before the fix
        (upgrade_request("/ws/quotes?tickers=" + _tickers(2000)), 400, b"too many tickers"),
        (upgrade_request("/ws/quotes?tickers=" + _tickers(5000)), 400, b"tickers value too long"),
        (upgrade_request("/ws/quotes?tickers=" + "A," * 20000), 414, b"request target over"),
        (
            upgrade_request("/ws", "".join(f"X-H{i}: v\r\n" for i in range(200))),
            431,
            b"more than 100 header fields",
        ),
        (upgrade_request("/ws", "X-Big: " + "a" * 20000 + "\r\n"), 431, b"a header field over"),
        (
            upgrade_request("/ws", "".join(f"X-H{i}: {'b' * 7000}\r\n" for i in range(12))),
            431,
            b"request head over",
        ),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, b"invalid HTTP request"),
    ],
    ids=[
        "2000-tickers",
        "5000-tickers",
        "40kB-url",
        "200-headers",
        "20kB-header",
        "84kB-head",
        "junk",
    ],
)
async def test_oversized_handshakes_are_answered(
    redis_server: RedisServer,
    start_server: StartServer,
    request_bytes: bytes,
    status: int,
    reason: bytes,
) -> None:
    """Huge URLs, many or huge headers and junk each get a complete HTTP answer and a close."""
    server = start_server(redis_server)
    response = exchange(server.port, request_bytes)
    assert status_of(response) == status
    assert reason in response
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:  # still serving
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(ws))["volume"] == 1
    assert "ASGI callable returned without completing handshake" not in server.log()


async def test_websockets_client_sees_the_400_for_5000_tickers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """The reported case through a real client library: a 400 with the reason, not a hang."""
    server = start_server(redis_server)
    status, _h, body = await handshake_rejection(
        f"{server.ws_url}/ws/quotes?tickers={_tickers(5000)}"
    )
    assert status == 400
    assert "tickers value too long" in body


def test_websocket_layer_writes_its_own_rejections(redis_server: RedisServer) -> None:
    """
    Without our HTTP layer in front, the WebSocket protocol still answers what the
    websockets parser refuses (it used to leave that 414 unwritten); the app itself
    refuses every request of such a server with 500.
    """
    options = ["--http", "httptools", *PROTECTED[2:]]
    server = AnsweringServer(
        uvicorn_factory(*options), env={"QUOTES_REDIS_URL": redis_server.url}
    ).start()
    try:
        response = exchange(server.port, upgrade_request("/ws?tickers=" + "A," * 20000))
        assert status_of(response) == 414
        assert server.get("/health")[0] == 500
    finally:
        server.stop()


async def test_incomplete_handshakes_are_dropped_after_the_timeout(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Half a request gets 408 and a close; a silent connection is closed; both counted."""
    server = start_server(redis_server, handshake_timeout=1)
    with (
        socket.create_connection(("127.0.0.1", server.port)) as half,
        socket.create_connection(("127.0.0.1", server.port)) as silent,
    ):
        half.sendall(b"GET /ws/quotes HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        assert status_of(read_all(half, timeout=20)) == 408
        assert read_all(silent, timeout=20) == b""
    assert server.metric("quotes_limit_hits_total", 'limit="handshake_timeout"') == 2
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:  # the server is unharmed
        redis_server.publish(CHANNEL, upstream_message("AAPL", 5))
        assert (await recv_json(ws))["volume"] == 5


async def test_global_and_per_address_caps(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Past the per-IP cap a handshake gets 429, past the process cap 503, both with Retry-After."""
    server = start_server(redis_server, max_connections=3, max_connections_per_ip=2, retry_after=4)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url), open_ws(url):
        status, headers, body = await handshake_rejection(url)
        assert (status, headers.get("Retry-After")) == (429, "4")
        assert "at most 2" in body
    assert server.metric("quotes_ws_handshakes_total", 'outcome="ip_limit"') == 1
    server.stop()
    server = start_server(redis_server, max_connections=2, max_connections_per_ip=0)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url), open_ws(url):
        status, headers, body = await handshake_rejection(url)
        assert (status, headers.get("Retry-After")) == (503, "5")
        assert "connection limit" in body
    # the slots free up when the connections end
    wait_until(lambda: server.metric("quotes_ws_connections") == 0, what="connections closed")
    async with open_ws(url) as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 9))
        assert (await recv_json(ws))["volume"] == 9
    assert server.metric("quotes_ws_handshakes_total", 'outcome="over_capacity"') == 1


async def test_uvicorn_limit_concurrency_does_not_gate_upgrades(redis_server: RedisServer) -> None:
    """
    Why the caps live in the app: uvicorn's ``--limit-concurrency 2`` lets three
    WebSocket upgrades through while it refuses a plain HTTP request.
    """
    server = ServerProcess(
        uvicorn_factory("--limit-concurrency", "2", *PROTECTED),
        env={"QUOTES_REDIS_URL": redis_server.url},
    ).start()
    try:
        url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
        async with open_ws(url), open_ws(url), open_ws(url) as third:
            assert server.get("/health")[0] == 503
            redis_server.publish(CHANNEL, upstream_message("AAPL", 3))
            assert (await recv_json(third))["volume"] == 3
    finally:
        server.stop()


async def test_forwarded_for_counts_only_from_trusted_proxies(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """X-Forwarded-For names the client only when the peer is a configured proxy."""
    url_of = "{}/ws/quotes?tickers=AAPL".format
    untrusted = start_server(redis_server, max_connections_per_ip=1)
    url = url_of(untrusted.ws_url)
    async with open_ws(url, additional_headers={"X-Forwarded-For": "203.0.113.1"}):
        status, _h, _b = await handshake_rejection(
            url, additional_headers={"X-Forwarded-For": "203.0.113.2"}
        )
        assert status == 429  # the header was ignored: both count as 127.0.0.1
    trusted = start_server(redis_server, max_connections_per_ip=1, trusted_proxies="127.0.0.0/8")
    url = url_of(trusted.ws_url)
    async with (
        open_ws(url, additional_headers={"X-Forwarded-For": "203.0.113.1"}),
        open_ws(url, additional_headers={"X-Forwarded-For": "203.0.113.2"}) as second,
    ):
        status, _h, _b = await handshake_rejection(
            url, additional_headers={"X-Forwarded-For": "203.0.113.2"}
        )
        assert status == 429
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        assert (await recv_json(second))["volume"] == 2
    assert "connected from 203.0.113.2:" in trusted.log()


async def test_message_flood_is_closed_with_1008(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A client sending messages (or pings) past the rate is closed with 1008; others stream on."""
    server = start_server(redis_server, ws_inbound_rate=5, ws_inbound_burst=10)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url) as bystander, open_ws(url) as texter:
        for _ in range(5):  # within the burst: fine
            await texter.send(b"{}")  # binary: ignored, never answered
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(texter))["volume"] == 1
        with contextlib.suppress(ConnectionClosed):
            for _ in range(200):
                await texter.send(b"{}")  # binary: ignored, never answered
        async with open_ws(url) as pinger:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(200):
                    await pinger.ping()
            await wait_closed(pinger)
        for flooder in (texter, pinger):
            closed = await wait_closed(flooder)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (
                1008,
                "Policy violation: too many messages",
            )
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        assert (await recv_json(bystander))["volume"] == 1
        assert (await recv_json(bystander))["volume"] == 2
    wait_until(
        lambda: server.metric("quotes_limit_hits_total", 'limit="inbound_rate"') == 2,
        what="floods counted",
    )
    assert server.metric("quotes_ws_disconnects_total", 'code="1008"') == 2


async def test_null_origin_is_refused_unless_listed(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """``Origin: null`` is not covered by ``*``; listing ``null`` allows it."""
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes"
    status, _h, _b = await handshake_rejection(url, additional_headers={"Origin": "null"})
    assert status == 403
    async with open_ws(url, origin="https://any.example"):
        pass
    server.stop()
    server = start_server(redis_server, cors_origins="null,https://app.example")
    async with open_ws(f"{server.ws_url}/ws/quotes", additional_headers={"Origin": "null"}):
        pass


async def test_client_text_cannot_forge_log_lines(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A newline in a client's message or ticker list is escaped; no line of its own appears."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        await ws.send("hello\nFAKE quotes_server ERROR injected line")
        await ws.send("x" * 5000)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)
    assert status_of(exchange(server.port, upgrade_request("/ws?tickers=A%0AFAKE2"))) == 400
    wait_until(lambda: "FAKE2" in server.log(), what="the rejection logged")
    log = server.log()
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith("FAKE")]
    assert "hello\\x0aFAKE quotes_server ERROR injected line" in log
    assert max(len(line) for line in lines) < 1200
