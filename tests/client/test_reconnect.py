"""Reconnect or give up, against tiny local servers; backoff delays are injected, never waited."""

from __future__ import annotations

import anyio
import pytest
from websockets.asyncio.server import ServerConnection

from quotes_client import (
    BackingOff,
    Backoff,
    ClientState,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    Disconnected,
    FatalClose,
    HandshakeRejected,
    QuotesClient,
    RetriesExhausted,
)
from quotes_core.testing import quote_payload
from tests.client.servers import (
    FakeClock,
    Handler,
    RecordingSleep,
    SilentTcpServer,
    StreamServer,
    events_of,
    eventually,
    send_then_hold,
    take,
)
from tests.helpers.processes import free_port

pytestmark = pytest.mark.anyio


def exact() -> Backoff:
    """The base schedule 1, 2, 4 ... 60 without randomness."""
    return Backoff(jitter=0)


def close_first_with(code: int, reason: str = "bye") -> Handler:
    """Connection 0 sends quote 0 and closes with ``code``; later ones send quote N and stay."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.send(quote_payload("AAPL", index))
        if index == 0:
            await ws.close(code, reason)
        await ws.wait_closed()

    return handler


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1012, 1013, 4000])
async def test_retryable_close_codes_reconnect(code: int, sleep: RecordingSleep) -> None:
    """After a retryable close the client backs off once and resumes on a new connection."""
    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(close_first_with(code)) as server,
        QuotesClient(server.url(), sleep=sleep, backoff=exact(), on_event=seen.append) as client,
    ):
        quotes = await take(client, 2)
        stats = client.stats
    assert [q.volume for q in quotes] == [0, 1]
    assert [d.code for d in events_of(Disconnected, seen)] == [code]
    assert sleep.delays == [1.0]
    assert (stats.connects, stats.reconnects) == (2, 1)


async def test_dropped_connection_is_1006_and_reconnects(sleep: RecordingSleep) -> None:
    """A connection cut without a close frame reports 1006 and is retried."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.send(quote_payload("AAPL", index))
        if index == 0:
            ws.transport.abort()
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), sleep=sleep, on_event=seen.append) as client,
    ):
        quotes = await take(client, 2)
    assert [q.volume for q in quotes] == [0, 1]
    assert [d.code for d in events_of(Disconnected, seen)] == [1006]
    assert len(sleep.delays) == 1


@pytest.mark.parametrize("code", [1008, 1009])
async def test_fatal_close_codes_raise_after_buffered_quotes(
    code: int, sleep: RecordingSleep
) -> None:
    """1008/1009 end the stream: quotes already received come first, then FatalClose, no retry."""
    async with (
        StreamServer(close_first_with(code, "policy violation")) as server,
        QuotesClient(server.url(), sleep=sleep) as client,
    ):
        got = await take(client, 1)
        with pytest.raises(FatalClose) as info, anyio.fail_after(10):
            await client.__anext__()
        stats = client.stats
    assert [q.volume for q in got] == [0]
    assert (info.value.code, info.value.reason) == (code, "policy violation")
    assert sleep.delays == []
    assert stats.attempts == 1
    assert stats.state is ClientState.FAILED


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_rejected_handshake_raises_at_once(status: int, sleep: RecordingSleep) -> None:
    """HTTP 400/401/403/404 raise HandshakeRejected with status and body; nothing is retried."""
    async with (
        StreamServer(reject=lambda i: (status, "invalid ticker 'X;'\n")) as server,
        QuotesClient(server.url(), sleep=sleep) as client,
    ):
        with pytest.raises(HandshakeRejected) as info, anyio.fail_after(10):
            await take(client, 1)
        with pytest.raises(HandshakeRejected):
            await client.wait_connected()
    assert info.value.status == status
    assert info.value.reason == "invalid ticker 'X;'"
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_503_is_retried_honouring_retry_after(sleep: RecordingSleep) -> None:
    """A 503 with Retry-After: 7 waits 7 s (more than the backoff's 1 s), then connects."""

    def reject(index: int) -> tuple[int, str, dict[str, str]] | None:
        return (503, "upstream down", {"Retry-After": "7"}) if index == 0 else None

    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(send_then_hold(quote_payload()), reject=reject) as server,
        QuotesClient(server.url(), sleep=sleep, backoff=exact(), on_event=seen.append) as client,
    ):
        await client.wait_connected()
    failed = events_of(ConnectFailed, seen)
    assert [(f.status, f.fatal) for f in failed] == [(503, False)]
    assert "upstream down" in failed[0].reason
    assert events_of(BackingOff, seen) == [BackingOff(delay=7.0, attempt=2, retry_after=7.0)]
    assert sleep.delays == [7.0]


async def test_backoff_grows_and_resets_after_a_healthy_connection(
    sleep: RecordingSleep, clock: FakeClock
) -> None:
    """Quick failures wait 1, 2, 4, 8 s; a connection that lasted 10 s resets the delay to 1 s."""
    healthy_may_end = anyio.Event()

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 4:
            await healthy_may_end.wait()
        if index <= 4:
            await ws.close(1011, "Internal server error")
        else:
            await ws.send(quote_payload())
        await ws.wait_closed()

    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), sleep=sleep, backoff=exact(), clock=clock) as client,
    ):
        await eventually(lambda: client.stats.connects == 5, what="the fifth connection")
        clock.advance(10)  # the fifth connection has now been open for 10 s
        healthy_may_end.set()
        await take(client, 1)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 1.0]


async def test_jitter_only_shortens_delays(sleep: RecordingSleep) -> None:
    """With the default jitter each delay lies in [d/2, d] of the base schedule."""
    client = QuotesClient(
        f"ws://127.0.0.1:{free_port()}/ws", sleep=sleep, max_retries=6, open_timeout=5
    )
    async with client:
        with pytest.raises(RetriesExhausted), anyio.fail_after(10):
            await take(client, 1)
    assert len(sleep.delays) == 6
    for delay, base in zip(sleep.delays, [1, 2, 4, 8, 16, 32], strict=True):
        assert base / 2 <= delay <= base


async def test_max_retries_gives_up_with_the_last_error(sleep: RecordingSleep) -> None:
    """With max_retries=2 and nothing listening, three attempts fail, then RetriesExhausted."""
    async with QuotesClient(
        f"ws://127.0.0.1:{free_port()}/ws", sleep=sleep, backoff=exact(), max_retries=2
    ) as client:
        with pytest.raises(RetriesExhausted) as info, anyio.fail_after(10):
            await take(client, 1)
        stats = client.stats
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert sleep.delays == [1.0, 2.0]
    assert stats.attempts == 3
    assert stats.state is ClientState.FAILED


async def test_refused_connection_is_retried_until_the_server_appears(
    gated_sleep: RecordingSleep,
) -> None:
    """Connection refused backs off; once a server listens on the port the client connects."""
    port = free_port()
    seen: list[ConnectionEvent] = []
    client = QuotesClient(f"ws://127.0.0.1:{port}/ws", sleep=gated_sleep, on_event=seen.append)
    async with client:
        await gated_sleep.wait_calls(1)
        assert client.state is ClientState.BACKING_OFF
        async with StreamServer(send_then_hold(quote_payload()), port=port):
            gated_sleep.release()
            quotes = await take(client, 1)
    assert quotes[0].ticker == "AAPL"
    failed = events_of(ConnectFailed, seen)
    assert len(failed) == 1
    assert failed[0].status is None
    assert not failed[0].fatal
    assert len(events_of(Connected, seen)) == 1


async def test_handshake_timeout_is_retried(sleep: RecordingSleep) -> None:
    """A server that accepts TCP but never answers the handshake times out and is retried."""
    async with SilentTcpServer() as silent:
        client = QuotesClient(
            f"ws://127.0.0.1:{silent.port}/ws", sleep=sleep, open_timeout=0.2, max_retries=1
        )
        async with client:
            with pytest.raises(RetriesExhausted) as info, anyio.fail_after(10):
                await take(client, 1)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert info.value.attempts == 2
    assert len(sleep.delays) == 1


async def test_ping_timeout_reconnects(sleep: RecordingSleep) -> None:
    """A server that stops answering pings is left (1011 keepalive timeout) and reconnected."""

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 0:
            ws.transport.pause_reading()  # pings go unanswered
            await eventually(lambda: len(server.connections) > 1, what="a new connection")
            ws.transport.abort()  # the client has moved on: do not wait for our close_timeout
        else:
            await ws.send(quote_payload())
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with StreamServer(handler) as server:
        client = QuotesClient(
            server.url(),
            ping_interval=0.05,
            ping_timeout=0.05,
            close_timeout=0.1,
            sleep=sleep,
            on_event=seen.append,
        )
        async with client:
            await take(client, 1)
    first = events_of(Disconnected, seen)[0]
    assert (first.code, first.by_server) == (1011, False)
    assert "keepalive ping timeout" in first.reason
    assert len(sleep.delays) == 1


async def test_stale_stream_reconnects(sleep: RecordingSleep) -> None:
    """With stale_timeout, a connection that goes silent is replaced by a new one."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.send(quote_payload("AAPL", index))
        await ws.wait_closed()  # then silence (pings are still answered)

    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), stale_timeout=0.1, sleep=sleep, on_event=seen.append) as client,
    ):
        quotes = await take(client, 2)
    assert [q.volume for q in quotes] == [0, 1]
    stale = events_of(Disconnected, seen)[0]
    assert (stale.code, stale.by_server) == (None, False)
    assert "no message for 0.1 s" in stale.reason
    assert server.close_codes[0] == 1000
