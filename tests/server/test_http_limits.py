"""Plain HTTP requests are bounded: a deadline for a whole request, its body, open connections."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, python_module
from tests.helpers.rawws import read_all, status_of
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.streaming_app import TICKS
from tests.helpers.ws import open_ws, recv_json

pytestmark = pytest.mark.anyio

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One ``Content-Length`` response off a kept-alive socket, leaving the socket open."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def trickle(sock: socket.socket, data: bytes, pause: float = 0.3) -> tuple[int, bytes]:
    """
    Send ``data`` a byte at a time, ``pause`` apart, until the server answers or
    closes; return how many bytes were sent and everything the server sent.
    """
    sent = 0
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        sock.settimeout(pause)  # waiting for the server's answer paces the trickle
        try:
            first = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        return sent, first + read_all(sock, timeout=10)
    return sent, read_all(sock, timeout=10)


def _limit_hits(server: ServerProcess, limit: str) -> float:
    return server.metric("quotes_limit_hits_total", f'limit="{limit}"')


async def test_reported_endless_body_is_refused_at_once(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """The reported request (Content-Length 10^9, one byte of body) gets 413 before reading it."""
    server = start_server(redis_server)
    with _connect(server.port) as sock:
        sock.sendall(HEALTH + b"Content-Length: 1000000000\r\n\r\nx")
        response = read_all(sock, timeout=20)
    assert status_of(response) == 413
    assert b"request body over 16384 bytes" in response
    assert _limit_hits(server, "body_too_large") == 1


async def test_reported_endless_body_gets_408_at_the_deadline(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Without a body cap, the same request gets 408 and a close at the request deadline."""
    server = start_server(
        redis_server, http_max_body_size=0, handshake_timeout=1, http_request_timeout=1
    )
    with _connect(server.port) as sock:
        sock.sendall(HEALTH + b"Content-Length: 1000000000\r\n\r\nx")
        response = read_all(sock, timeout=20)  # the server closes it; no sleep
    assert status_of(response) == 408
    assert b"request body not complete in time" in response
    assert _limit_hits(server, "request_timeout") == 1
    assert _limit_hits(server, "handshake_timeout") == 0


async def test_slow_body_gets_408(redis_server: RedisServer, start_server: StartServer) -> None:
    """A body trickled a byte at a time, each byte well within any idle timeout, gets 408."""
    server = start_server(redis_server, handshake_timeout=1, http_request_timeout=1)
    body = b"x" * 200
    with _connect(server.port) as sock:
        sock.sendall(HEALTH + b"Content-Length: %d\r\n\r\n" % len(body))
        sent, response = trickle(sock, body)
    assert sent < len(body)
    assert status_of(response) == 408
    assert _limit_hits(server, "request_timeout") == 1


async def test_oversized_chunked_body_gets_413(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A chunked body, which declares no length, gets 413 once it passes the cap."""
    server = start_server(redis_server, http_max_body_size=1000)
    chunk = b"y" * 600
    with _connect(server.port) as sock:
        sock.sendall(
            HEALTH + b"Transfer-Encoding: chunked\r\n\r\n" + (b"258\r\n" + chunk + b"\r\n") * 2
        )
        response = read_all(sock, timeout=20)
    assert status_of(response) == 413
    assert _limit_hits(server, "body_too_large") == 1


async def test_requests_within_the_limits_are_served_on_a_kept_alive_connection(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Requests with and without a small body are answered one after another on one socket."""
    server = start_server(redis_server, handshake_timeout=1, http_request_timeout=1)
    with _connect(server.port) as sock:
        sock.sendall(HEALTH + b"\r\n")
        assert status_of(read_response(sock)) == 200
        sock.sendall(HEALTH + b"Content-Length: 5\r\n\r\nhello")
        assert b'"status":"ok"' in read_response(sock)
        # a chunked body ends with its last chunk, then the next request comes
        sock.sendall(HEALTH + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert status_of(read_response(sock)) == 200
        sock.sendall(HEALTH + b"Connection: close\r\n\r\n")
        assert status_of(read_all(sock)) == 200
    for limit in ("request_timeout", "body_too_large", "handshake_timeout"):
        assert _limit_hits(server, limit) == 0


async def test_blank_lines_do_not_keep_an_idle_connection_open(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """After a response, CRLFs sent now and then start no request: keep-alive still closes it."""
    server = start_server(redis_server)
    with _connect(server.port) as sock:
        sock.sendall(HEALTH + b"\r\n")
        assert status_of(read_response(sock)) == 200
        # uvicorn's keep-alive is 5 s; a CRLF every 0.3 s used to cancel it for good
        sent, response = trickle(sock, b"\r\n" * 100)
    assert response == b""
    assert sent < 100


async def test_past_the_http_connection_cap_new_connections_get_503(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    Past ``http_max_connections`` a connection gets 503 with Retry-After at once; a
    WebSocket keeps streaming, and once the idle connections go, HTTP is served again.
    """
    server = start_server(redis_server, http_max_connections=2, retry_after=7)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        with _connect(server.port) as idle1, _connect(server.port) as idle2:
            # the server accepts in order, so both idle connections count before these
            with _connect(server.port) as third, _connect(server.port) as fourth:
                responses = [read_all(s, timeout=20) for s in (third, fourth)]  # sending nothing
            for response in responses:
                assert status_of(response) == 503
                assert b"\r\nretry-after: 7\r\n" in response.lower()
                assert b"more than 2 open HTTP connections" in response
            redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
            assert (await recv_json(ws))["volume"] == 1
            for idle in (idle1, idle2):
                # the counted ones are served; the server closing them frees their slots
                idle.sendall(HEALTH + b"Connection: close\r\n\r\n")
                assert status_of(read_all(idle)) == 200
        assert server.get("/health")[0] == 200
        assert _limit_hits(server, "http_connections") == 2
    assert server.log().count("HTTP connections open: new ones get 503") == 1  # no log flood


async def test_websockets_leave_the_http_connection_count_at_the_upgrade(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """With an HTTP cap of 2, three WebSockets open and stream, and plain HTTP is still served."""
    server = start_server(redis_server, http_max_connections=2)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url) as a, open_ws(url) as b, open_ws(url) as c:
        assert server.get("/health")[0] == 200
        redis_server.publish(CHANNEL, upstream_message("AAPL", 4))
        for ws in (a, b, c):
            assert (await recv_json(ws))["volume"] == 4
    assert _limit_hits(server, "http_connections") == 0


def test_a_streaming_response_outlives_the_request_deadline(
    server_process: Callable[..., ServerProcess],
) -> None:
    """The deadline bounds receiving a request: a response streaming 4x longer is not cut."""
    server = server_process(
        python_module(
            "uvicorn",
            "tests.helpers.streaming_app:app",
            "--port",
            "{port}",
            "--http",
            "quotes_server.http_protocol:QuotesHttpProtocol",
            "--lifespan",
            "on",
        )
    )
    with _connect(server.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = read_all(sock, timeout=30)
    assert status_of(response) == 200
    for i in range(TICKS):
        assert b"tick %d\n" % i in response
    assert b"end\n" in response
    assert response.endswith(b"0\r\n\r\n")  # the last chunk: the stream ended, not cut


def test_a_request_timeout_below_the_handshake_timeout_is_refused() -> None:
    """The request deadline includes the head, so a shorter one stops the server at start-up."""
    out = subprocess.run(
        python_module("quotes_server", "--http-request-timeout", "5", "--handshake-timeout", "10"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "http_request_timeout (5) must be at least handshake_timeout (10)" in out.stderr
