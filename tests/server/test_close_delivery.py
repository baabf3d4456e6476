"""
Every close the server starts reaches a client that is sending at that moment.

Closing a socket whose peer's data is still unread makes the kernel answer with a
reset, which can destroy the close frame before the client reads it (the client
then sees 1006, no reason). Each close code the server uses is tried here with a
client that keeps sending while the close comes: a ``websockets`` client, and a
raw socket that reads the close frame itself, answers it as RFC 6455 asks, and
checks that the server then ends the TCP connection with a FIN, not a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import jwt
import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, eventually
from tests.helpers.rawws import (
    answer_close,
    client_frame,
    raw_handshake,
    read_frames_until_close,
)
from tests.helpers.server import StartServer
from tests.helpers.ws import ConnectionClosed, open_ws, wait_closed

pytestmark = pytest.mark.anyio

SECRET = "close-delivery-secret-0123456789-0123456789"
# the traffic the clients keep sending: ignored by the server (binary), never a flood
BUSY = {"ws_inbound_rate": 1_000_000, "ws_inbound_burst": 1_000_000}


async def keep_sending(ws: ClientConnection) -> None:
    """Send small binary frames until the connection closes (the pace of real traffic)."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send(b"busy")
            await asyncio.sleep(0.001)


@contextlib.contextmanager
def raw_sender(sock: socket.socket) -> Iterator[threading.Event]:
    """
    A thread sending small binary frames on ``sock`` until the block ends or it fails
    (it has stopped when the block ends: a client sends nothing after its close frame).
    """
    stop = threading.Event()
    sending = threading.Event()

    def run() -> None:
        frame = client_frame(b"busy", opcode=0x2)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(frame)
                sending.set()
                time.sleep(0.001)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        sending.wait(10)
        yield sending
    finally:
        stop.set()
        thread.join(10)


SendBinary = Callable[[bytes], Awaitable[None]]
Trigger = Callable[[SendBinary], Awaitable[None]]
"""What makes the server close: given the client's own binary send, for what it sends."""


async def closed_while_sending(
    url: str, trigger: Trigger, **kwargs: object
) -> tuple[int | None, str]:
    """Open ``url``, keep sending, run ``trigger``; the close code and reason received."""
    async with open_ws(url, **kwargs) as ws:
        sender = asyncio.create_task(keep_sending(ws))
        await trigger(ws.send)
        closed = await wait_closed(ws, timeout=60)
        await sender
    rcvd = closed.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def raw_closed_while_sending(
    port: int, path: str, trigger: Trigger, rcvbuf: int | None = None
) -> tuple[int | None, str]:
    """
    The same with a raw socket that reads every frame until the close frame, answers
    it once its sender has stopped, and requires the server's FIN, not a reset.
    """
    sock = raw_handshake(port, path, rcvbuf=rcvbuf)

    async def send_binary(data: bytes) -> None:
        await asyncio.to_thread(sock.sendall, client_frame(data, opcode=0x2))

    try:
        with raw_sender(sock):
            await trigger(send_binary)
            _frames, code, reason = await asyncio.to_thread(read_frames_until_close, sock, 60)
        assert await asyncio.to_thread(answer_close, sock, code), "reset, not a FIN"
    finally:
        sock.close()
    return code, reason


def _nothing() -> Trigger:
    async def trigger(_send: SendBinary) -> None:
        return None

    return trigger


async def test_five_concurrent_flooders_each_get_1008(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """The reported case: five clients flooding pings at once each receive 1008 and its reason."""
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes"

    async def flood() -> tuple[int | None, str]:
        async with open_ws(url) as ws:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(20_000):
                    await ws.send('{"action":"ping"}')
            closed = await wait_closed(ws, timeout=60)
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")

    results = await asyncio.gather(*(flood() for _ in range(5)))
    assert results == [(1008, "Policy violation: too many messages")] * 5


async def test_a_raw_flooder_reads_its_1008(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A raw client flooding frames as fast as it can still reads the close frame."""
    server = start_server(redis_server, ws_inbound_rate=10, ws_inbound_burst=20)
    sock = raw_handshake(server.port, "/ws/quotes?tickers=NONE")
    try:
        frame = client_frame(b"flood", opcode=0x2) * 50
        with contextlib.suppress(OSError):
            for _ in range(200):
                sock.sendall(frame)
        _frames, code, reason = await asyncio.to_thread(read_frames_until_close, sock, 60)
        assert await asyncio.to_thread(answer_close, sock, code), "reset, not a FIN"
    finally:
        sock.close()
    assert (code, reason) == (1008, "Policy violation: too many messages")


@pytest.mark.parametrize("client", ["websockets", "raw"])
async def test_expired_token_1008_reaches_a_sending_client(
    redis_server: RedisServer, start_server: StartServer, client: str
) -> None:
    """A token that expires while the client sends: it reads 1008 "Token expired"."""
    server = start_server(redis_server, jwt_secret=SECRET, jwt_leeway=0, **BUSY)
    token = jwt.encode({"exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
    path = f"/ws/quotes?tickers=NONE&access_token={token}"
    got = await _close(client, server, path, _nothing())
    assert got == (1008, "Token expired")


@pytest.mark.parametrize("client", ["websockets", "raw"])
async def test_oversize_frame_1009_reaches_a_sending_client(
    redis_server: RedisServer, start_server: StartServer, client: str
) -> None:
    """A frame over ws_max_size among others: the client reads 1009, not a reset."""
    server = start_server(redis_server, ws_max_size=1024, **BUSY)

    async def send_big(send: SendBinary) -> None:
        await send(b"x" * 4096)

    code, _reason = await _close(client, server, "/ws/quotes?tickers=NONE", send_big)
    assert code == 1009


@pytest.mark.parametrize("client", ["websockets", "raw"])
async def test_upstream_lost_1011_reaches_a_sending_client(
    redis_server: RedisServer, start_server: StartServer, client: str
) -> None:
    """Redis gone past the grace period while the client sends: it reads 1011."""
    server = start_server(redis_server, grace_period=1, **BUSY)

    async def kill_redis(_send: SendBinary) -> None:
        redis_server.stop()

    got = await _close(client, server, "/ws/quotes?tickers=NONE", kill_redis)
    assert got == (1011, "Internal server error")


@pytest.mark.parametrize("client", ["websockets", "raw"])
async def test_shutdown_1001_reaches_a_sending_client(
    redis_server: RedisServer, start_server: StartServer, client: str
) -> None:
    """SIGTERM while the client sends: it reads 1001 "Server shutting down"."""
    server = start_server(redis_server, **BUSY)
    assert server.proc is not None
    proc = server.proc

    async def terminate(_send: SendBinary) -> None:
        proc.send_signal(signal.SIGTERM)

    got = await _close(client, server, "/ws/quotes?tickers=NONE", terminate)
    assert got == (1001, "Server shutting down")


@pytest.mark.parametrize("client", ["websockets", "raw"])
async def test_slow_consumer_1013_reaches_a_sending_client_once_it_reads(
    redis_server: RedisServer, start_server: StartServer, client: str
) -> None:
    """
    A client that sends but does not read is closed with 1013; when it reads again,
    the close frame is there after the quotes (the server kept reading, never reset).
    """
    server = start_server(
        redis_server, slow_client_timeout=1, close_timeout=60, buffer_size=10, **BUSY
    )

    async def until_closed_as_slow(_send: SendBinary) -> None:
        start = 0
        while server.metric("quotes_slow_consumer_closes_total") < 1:
            assert start < 2_000_000, "the client was never closed"
            batch = [upstream_message(f"T{i % 50}", i) for i in range(start, start + 5000)]
            await asyncio.to_thread(redis_server.publish_many, "quotes.realtime", batch)
            start += 5000

    # max_queue=1: the websockets client stops reading the socket while nobody calls
    # recv(); the raw one simply never reads, with a small receive buffer
    got = await _close(client, server, "/ws/quotes", until_closed_as_slow, max_queue=1, rcvbuf=4096)
    assert got == (1013, "Slow consumer")


async def _close(
    client: str,
    server: ServerProcess,
    path: str,
    trigger: Trigger,
    *,
    max_queue: int | None = None,
    rcvbuf: int | None = None,
) -> tuple[int | None, str]:
    if client == "websockets":
        options = {} if max_queue is None else {"max_queue": max_queue}
        return await closed_while_sending(f"{server.ws_url}{path}", trigger, **options)
    return await raw_closed_while_sending(server.port, path, trigger, rcvbuf)


def _ends_with_a_reset(sock: socket.socket) -> bool:
    """Read to the end: True when the connection ended with a reset, not EOF."""
    sock.settimeout(30)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    return False


def _server_side_sockets(server_port: int, client_port: int) -> list[str]:
    """TCP states of the server's end of one connection, orphaned sockets included."""
    return [
        c.status
        for c in psutil.net_connections(kind="tcp4")
        if c.laddr and c.raddr and c.laddr.port == server_port and c.raddr.port == client_port
    ]


async def test_an_unresponsive_peer_is_reset_and_leaves_nothing_in_the_kernel(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    A peer that stops reading: no pong, so 1011 and close_timeout; then a reset, so the
    kernel drops the backlog it held for it (a plain close left the socket orphaned
    in FIN-WAIT-1 with its unsent megabytes for minutes).
    """
    server = start_server(
        redis_server,
        ws_ping_interval=1,
        ws_ping_timeout=1,
        close_timeout=1,
        slow_client_timeout=600,
        buffer_size=100_000,
    )
    sock = raw_handshake(server.port, "/ws/quotes", rcvbuf=4096)
    client_port = sock.getsockname()[1]
    try:
        # fill every buffer on the way: the server's kernel keeps a backlog for it
        await asyncio.to_thread(
            redis_server.publish_many,
            "quotes.realtime",
            [upstream_message(f"T{i % 50}", i) for i in range(20_000)],
        )
        await eventually(
            lambda: "disconnected code=1011" in server.log(),
            timeout=30,
            what="the keepalive to close the peer with 1011",
        )
        await eventually(
            lambda: not _server_side_sockets(server.port, client_port),
            timeout=30,
            what="the server's socket to be gone from the kernel",
        )
        assert _ends_with_a_reset(sock)
    finally:
        sock.close()
    assert server.metric("quotes_ws_disconnects_total", 'code="1011"') == 1
