"""
The scripted server (quotes_client.testing) as a user would drive it: generated
streams through it to a real QuotesClient, and scripted faults on cue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote as urlquote

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotes_client import (
    Backoff,
    ConnectFailed,
    ConnectionEvent,
    Disconnected,
    Gap,
    HandshakeRejected,
    QuotesClient,
    Recovered,
)
from quotes_client.testing import ScriptedServer
from quotes_core import Quote, TickerFilter, encode_quote, recovered_event, with_position
from quotes_core.testing import SMALL_UNIVERSE, filter_queries, make_quote, quote_streams, quotes
from tests.client.servers import RecordingSleep, events_of, take
from tests.helpers.rawws import raw_handshake
from tests.helpers.server import StartServer
from tests.helpers.ws import handshake_rejection, open_ws

pytestmark = pytest.mark.anyio

EXAMPLES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def with_query(url: str, raw: str | None) -> str:
    """The URL with ``tickers`` exactly as a client might write it (percent-encoded)."""
    return url if raw is None else f"{url}?tickers={urlquote(raw, safe=',*')}"


def sentinel(raw: str | None) -> Quote:
    """A quote the filter ``raw`` lets through, marking the end of a test stream."""
    wanted = TickerFilter.parse(raw).tickers
    ticker = min(wanted) if wanted else "ZZZZ"
    return make_quote(ticker, 424242, timestamp=datetime(2100, 1, 1, tzinfo=UTC))


@EXAMPLES
@given(raw=filter_queries(SMALL_UNIVERSE, edges=False), stream=quote_streams(max_size=25))
async def test_generated_stream_arrives_exactly(raw: str | None, stream: list[Quote]) -> None:
    """A client gets exactly the quotes its filter matches, in publication order, nothing else."""
    expected = [q for q in stream if TickerFilter.parse(raw).matches(q.ticker)]
    end = sentinel(raw)
    async with (
        ScriptedServer() as server,
        QuotesClient(with_query(server.url, raw), sleep=RecordingSleep()) as client,
    ):
        (conn,) = await server.wait_connections(1)
        assert conn.filter == TickerFilter.parse(raw)
        server.publish(*stream, end)
        got = await take(client, len(expected) + 1)
    assert got == [*expected, end]


async def test_quote_frames_are_byte_identical_to_quotes_server() -> None:
    """A quote's frame on the wire is exactly the frame quotes-server pre-builds for it."""
    from quotes_server.frames import text_frame

    quote = make_quote(
        "AAPL", 1000000, timestamp=datetime(2026, 2, 12, 10, 30, 0, 123456, tzinfo=UTC)
    )
    frame = text_frame(encode_quote(quote))
    async with ScriptedServer() as server:
        sock = await anyio.to_thread.run_sync(raw_handshake, server.port, "/v1/ws?tickers=aapl")
        try:
            await server.wait_connections(1)
            server.publish(quote)
            await server.drain()
            data = b""
            while len(data) < len(frame):
                data += await anyio.to_thread.run_sync(sock.recv, 4096)
        finally:
            sock.close()
    assert data == frame


def exact() -> Backoff:
    return Backoff(jitter=0)


@pytest.mark.parametrize("fault", ["close_1011", "tcp_drop"])
@EXAMPLES
@given(stream=quote_streams(min_size=2, max_size=20), data=st.data())
async def test_fault_mid_stream_reconnects_and_loses_nothing_delivered(
    fault: str, stream: list[Quote], data: st.DataObject
) -> None:
    """
    A 1011 close or a dropped TCP connection mid-stream: the client backs off once,
    reconnects, and its consumer gets every quote written before and after the fault.
    """
    cut = data.draw(st.integers(1, len(stream) - 1), label="cut")
    sleep = RecordingSleep()
    events: list[object] = []
    async with (
        ScriptedServer() as server,
        QuotesClient(server.url, sleep=sleep, backoff=exact(), on_event=events.append) as client,
    ):
        await server.wait_connections(1)
        server.publish(*stream[:cut])
        await server.drain()
        if fault == "close_1011":
            await server.close_all(1011, "Internal server error")
        else:
            server.abort_all()
        await server.wait_closed(1)
        await server.wait_connections(1)
        server.publish(*stream[cut:])
        got = await take(client, len(stream))
    assert got == stream
    assert [d.code for d in events_of(Disconnected, events)][:1] == [
        1011 if fault == "close_1011" else 1006
    ]
    assert sleep.delays == [1.0]
    assert server.connections[0].close_code == (1011 if fault == "close_1011" else 1006)


async def test_503_burst_is_retried_with_backoff_and_retry_after() -> None:
    """Three refused handshakes: each wait is max(backoff, Retry-After), then it streams."""
    sleep = RecordingSleep()
    events: list[object] = []
    async with ScriptedServer(retry_after=3) as server:
        server.refuse_next(3)
        async with QuotesClient(
            server.url, sleep=sleep, backoff=exact(), on_event=events.append
        ) as client:
            await server.wait_connections(1)
            server.publish(sentinel(None))
            (got,) = await take(client, 1)
    assert got == sentinel(None)
    assert [h.status for h in server.handshakes] == [503, 503, 503, 101]
    assert all(h.reason.endswith("retry later") for h in server.handshakes[:3])
    assert [e.status for e in events_of(ConnectFailed, events)] == [503, 503, 503]
    assert sleep.delays == [3.0, 3.0, 4.0]  # Retry-After 3 wins over 1 and 2; 4 wins over 3


async def test_stall_conflates_to_the_latest_quote_per_ticker() -> None:
    """While stalled, quotes past the bound conflate; on resume the client ends on every latest."""
    universe = ["AAPL", "MSFT"]
    stream = [make_quote(universe[i % 2], i, close=float(i)) for i in range(10)]
    async with ScriptedServer(bound=2) as server, QuotesClient(server.url) as client:
        (conn,) = await server.wait_connections(1)
        conn.stall()
        server.publish(*stream)
        assert conn.subscription.pending == 4  # 2 in FIFO, then one per ticker
        conn.resume()
        got = await take(client, 4)
    assert got == [stream[0], stream[1], stream[8], stream[9]]
    assert conn.subscription.conflated == 6


async def test_malformed_frames_are_skipped_by_the_client() -> None:
    """Non-JSON, wrong-schema and binary frames are counted invalid; the stream goes on."""
    quote = sentinel(None)
    async with ScriptedServer() as server, QuotesClient(server.url) as client:
        await server.wait_connections(1)
        await server.send_raw("not json")
        await server.send_raw('{"ticker": "AAPL"}')
        await server.send_raw(b"\x00\x01binary")
        server.publish(quote)
        (got,) = await take(client, 1)
        stats = client.stats
    assert got == quote
    assert stats.invalid == 3


async def test_connections_are_observable() -> None:
    """The server records handshakes, each connection's filter and mode, and client messages."""
    async with ScriptedServer() as server:
        async with (
            QuotesClient(server.url_for("/v1/ws/quotes"), tickers=["aapl", "MSFT"]) as one,
            QuotesClient(server.url_for("/ws") + "?mode=latest") as two,
        ):
            conns = await server.wait_connections(2)
            await one.wait_connected()
            await two.wait_connected()  # so that leaving closes cleanly, not mid-handshake
            by_path = {c.path: c for c in conns}
            assert by_path["/v1/ws/quotes"].filter.tickers == {"AAPL", "MSFT"}
            assert by_path["/ws"].filter.is_all
            assert by_path["/ws"].mode.value == "latest"
        closed = await server.wait_closed(2)
    assert sorted(c.close_code or 0 for c in closed) == [1000, 1000]
    assert [h.status for h in server.handshakes] == [101, 101]


@given(st.lists(quotes(), max_size=3))
@EXAMPLES
async def test_publish_counts_deliveries(batch: list[Quote]) -> None:
    """publish() says how many deliveries it queued: one per matching open connection."""
    async with ScriptedServer() as server, QuotesClient(server.url):
        await server.wait_connections(1)
        assert server.publish(*batch) == len(batch)


REJECTED = [
    ("/ws/quotes?tickers=AAPL;", None),
    ("/ws/quotes?tickers=" + "A" * 17, None),
    ("/v1/ws?tickers=AAPL&tickers=MSFT", None),
    ("/ws?tickers=" + ",".join(f"T{i}" for i in range(1001)), None),
    ("/ws?tickers=" + "A," * 10001, None),
    ("/ws/quotes?mode=bogus", None),
    ("/ws/quotes?since=nope", None),
    ("/ws/quotes?snapshot=2", None),
    ("/ws/quotes?seq=1&seq=1", None),
    ("/ws/quotes?max_hz=0", None),
    ("/ws/quotes", "https://evil.example"),
    ("/ws/quotes", "null"),
]


async def test_handshake_rejections_match_quotes_server(start_server: StartServer) -> None:
    """For bad tickers, repeated tickers, a bad mode or stream option and a foreign Origin,
    status and body are exactly quotes-server's; an allowed Origin and messy-but-valid
    tickers are accepted."""
    real = start_server(None, cors_origins="https://app.example")
    async with ScriptedServer(cors_origins=["https://app.example"]) as scripted:
        for path, origin in REJECTED:
            kwargs = {"origin": origin} if origin else {}
            want = await handshake_rejection(f"{real.ws_url}{path}", **kwargs)
            got = await handshake_rejection(f"ws://127.0.0.1:{scripted.port}{path}", **kwargs)
            assert (got[0], got[2]) == (want[0], want[2]), path
            assert got[0] in (400, 403)
        async with open_ws(
            scripted.url + "?tickers=%20aapl,,MSFT,aapl", origin="https://app.example"
        ):
            (conn,) = await scripted.wait_connections(1)
            assert conn.filter.tickers == {"AAPL", "MSFT"}


async def test_refused_handshake_is_503_with_retry_after() -> None:
    """refuse_next(n) answers exactly n handshakes with 503 and Retry-After, like a server
    whose upstream is down."""
    async with ScriptedServer(retry_after=7) as server:
        server.refuse_next(1)
        status, headers, body = await handshake_rejection(server.url)
        assert (status, headers.get("Retry-After")) == (503, "7")
        assert "unavailable" in body
        async with open_ws(server.url):
            await server.wait_connections(1)


async def test_rejected_handshake_with_any_status_is_fatal_for_the_client() -> None:
    """reject_next(1, 401, ...) reaches the client as HandshakeRejected, with no retry."""
    sleep = RecordingSleep()
    async with ScriptedServer() as server:
        server.reject_next(1, 401, "missing token", {"WWW-Authenticate": "Bearer"})
        async with QuotesClient(server.url, sleep=sleep) as client:
            with pytest.raises(HandshakeRejected) as info:
                await take(client, 1)
    assert info.value.status == 401
    assert sleep.delays == []
    assert [(h.status, h.reason) for h in server.handshakes] == [(401, "missing token")]


# -- the stream protocol's opt-in shapes ----------------------------------------------


def positioned(quote: Quote, seq: int, epoch: str = "e1") -> str:
    """The ``seq=1`` frame of ``quote`` at ``seq``."""
    return with_position(encode_quote(quote), seq, epoch)


async def test_stream_shapes_on_the_wire_plain_stays_plain() -> None:
    """snapshot=1&seq=1 gets the latest quote per ticker then live, with seq/epoch;
    batch=1 gets arrays; a plain connection on the same server gets the contract's bytes."""
    a1, m2, a3 = (make_quote("AAPL", 1), make_quote("MSFT", 2), make_quote("AAPL", 3))
    a4 = make_quote("AAPL", 4)
    async with ScriptedServer(epoch="e1") as server:
        server.publish(a1, m2, a3)
        async with (
            open_ws(server.url + "?snapshot=1&seq=1") as seqd,
            open_ws(server.url + "?snapshot=1&batch=1&tickers=AAPL,MSFT") as batched,
            open_ws(server.url + "?tickers=AAPL") as plain,
        ):
            await server.wait_connections(3)
            assert [await seqd.recv() for _ in range(2)] == [positioned(m2, 2), positioned(a3, 3)]
            assert await batched.recv() == f"[{encode_quote(m2)},{encode_quote(a3)}]"
            server.publish(a4)
            assert await seqd.recv() == positioned(a4, 4)
            assert await batched.recv() == f"[{encode_quote(a4)}]"
            assert await plain.recv() == encode_quote(a4)  # no snapshot, no fields added
    assert server.seq == 4


async def test_since_replays_the_missed_matching_quotes_or_says_it_cannot() -> None:
    """since=<epoch>:<seq> inside the window: recovered true, then exactly the matching
    quotes after seq; an unknown epoch or a seq ahead: recovered false (+ snapshot if asked)."""
    q = [make_quote("AAPL" if n % 2 else "MSFT", n) for n in range(1, 6)]
    async with ScriptedServer(epoch="e1") as server:
        server.publish(*q)
        async with open_ws(server.url + "?since=e1:2&tickers=AAPL") as ws:
            assert await ws.recv() == recovered_event(True, "e1", 5)
            assert [await ws.recv() for _ in range(2)] == [positioned(q[2], 3), positioned(q[4], 5)]
        async with open_ws(server.url + "?since=e1:9&snapshot=1&tickers=MSFT") as ws:
            assert await ws.recv() == recovered_event(False, "e1", 5)
            assert await ws.recv() == positioned(q[3], 4)  # MSFT's latest
        assert server.new_epoch("e2") == "e2"
        async with open_ws(server.url + "?since=e1:5") as ws:
            assert await ws.recv() == recovered_event(False, "e2", 5)
            server.publish(q[0])
            assert await ws.recv() == positioned(q[0], 6, "e2")
        with pytest.raises(ValueError, match="invalid epoch"):
            server.new_epoch("has:colon")


async def test_client_resumes_with_exactly_the_missed_quotes() -> None:
    """A real QuotesClient with resume=True: quotes that were pending when TCP dropped
    come back as the replay after recovered: true, nothing twice, nothing lost."""
    seen: list[ConnectionEvent] = []
    async with ScriptedServer(epoch="e1") as server:
        client = QuotesClient(server.url, resume=True, sleep=RecordingSleep(), on_event=seen.append)
        async with client:
            (conn,) = await server.wait_connections(1)
            server.publish(*(make_quote("AAPL", n) for n in (1, 2, 3)))
            first = await take(client, 3)
            conn.stall()  # 4..6 stay pending on this connection, then it drops
            server.publish(*(make_quote("AAPL", n) for n in (4, 5, 6)))
            server.abort_all()
            await server.wait_closed(1)
            await server.wait_connections(1)  # the resumed one: 7 goes out live
            server.publish(make_quote("AAPL", 7))
            rest = await take(client, 4)
            stats = client.stats
            assert client.position == ("e1", 7)
    assert [q.volume for q in first + rest] == [1, 2, 3, 4, 5, 6, 7]
    assert server.connections[1].options.since is not None
    assert str(server.connections[1].options.since) == "e1:3"
    assert events_of(Recovered, seen) == [Recovered(True, "e1", 6)]
    assert (stats.recovered, stats.unrecovered, stats.gaps, stats.missed) == (1, 0, 0, 0)


async def test_new_epoch_gives_the_client_recovered_false_and_the_snapshot() -> None:
    """new_epoch() (an outage or restart): the resuming client gets recovered: false,
    one Gap, then the latest quote of every ticker, then live quotes."""
    seen: list[ConnectionEvent] = []
    async with ScriptedServer(epoch="e1") as server:
        client = QuotesClient(server.url, resume=True, sleep=RecordingSleep(), on_event=seen.append)
        async with client:
            (conn,) = await server.wait_connections(1)
            server.publish(make_quote("AAPL", 1), make_quote("MSFT", 2))
            first = await take(client, 2)
            conn.stall()
            server.new_epoch("e2")
            server.publish(make_quote("AAPL", 3), make_quote("MSFT", 4), make_quote("AAPL", 5))
            await server.close_all(1012, "Service restart", flush=False)
            await server.wait_connections(1)
            server.publish(make_quote("MSFT", 6))
            rest = await take(client, 3)
            stats = client.stats
    assert [q.volume for q in first + rest] == [1, 2, 4, 5, 6]
    assert events_of(Recovered, seen) == [Recovered(False, "e2", 5)]
    assert events_of(Gap, seen) == [Gap("unrecovered", None, "e2", 5)]
    assert (stats.recovered, stats.unrecovered) == (0, 1)


async def test_max_hz_and_a_queue_over_its_budget_as_quotes_server() -> None:
    """max_hz holds a ticker's later quotes back (the newest one goes out when due);
    a client that sends actions without reading past client_queue_limit gets 1013."""
    async with (
        ScriptedServer(epoch="e1", client_queue_limit=2000) as server,
        open_ws(server.url + "?tickers=AAPL&max_hz=20") as ws,
    ):
        await server.wait_connections(1)
        server.publish(make_quote("AAPL", 1), make_quote("AAPL", 2), make_quote("AAPL", 3))
        assert await ws.recv() == encode_quote(make_quote("AAPL", 1))
        # held until 1/20 s after the first, then only the newest: 2 was conflated
        assert await ws.recv() == encode_quote(make_quote("AAPL", 3))
        (conn,) = server.open_connections
        conn.stall()
        for n in range(40):  # ~70 bytes of pong each, never read: over 2,000 bytes
            await ws.send(f'{{"action":"ping","id":{n}}}')
        await conn.wait_closed()
    assert (conn.close_code, conn.close_reason) == (1013, "Slow consumer: too much queued")
