"""The blocking facade: a background event loop, iterated from a plain thread."""

from __future__ import annotations

import json
import threading

import anyio
import pytest
from anyio import to_thread
from websockets.asyncio.server import ServerConnection

from quotes_client import ClientState, HandshakeRejected, SyncQuotesClient
from quotes_core import Quote, TickerFilter
from quotes_core.testing import make_quote, quote_payload, upstream_message
from tests.client.servers import StreamServer, send_then_hold

pytestmark = pytest.mark.anyio


async def test_sync_client_iterates_quotes_in_order() -> None:
    """A SyncQuotesClient in a worker thread yields every quote in order, then closes cleanly."""
    total = 1200  # more than one chunk crosses the thread boundary
    server = StreamServer(
        send_then_hold(*(upstream_message("AAPL", i).decode() for i in range(total)))
    )

    def consume(url: str) -> tuple[list[Quote], ClientState, str]:
        got: list[Quote] = []
        with SyncQuotesClient(url, buffer_size=total) as client:
            for quote in client:
                got.append(quote)
                if len(got) == total:
                    break
            state = client.stats.state
            thread = threading.current_thread().name
        return got, state, thread

    async with server:
        with anyio.fail_after(20):
            got, state, thread = await to_thread.run_sync(consume, server.url())
    assert [q.volume for q in got] == list(range(total))
    assert state is ClientState.CONNECTED
    assert thread != "quotes-client"  # iteration happened in the caller's thread


async def test_sync_client_raises_fatal_errors() -> None:
    """A 403 at the handshake raises HandshakeRejected from the blocking iteration."""
    server = StreamServer(reject=lambda i: (403, "Origin not allowed"))

    def consume(url: str) -> list[Quote]:
        with SyncQuotesClient(url, origin="http://evil.example") as client:
            return list(client)

    async with server:
        with pytest.raises(HandshakeRejected) as info, anyio.fail_after(20):
            await to_thread.run_sync(consume, server.url())
    assert info.value.status == 403
    assert info.value.reason == "Origin not allowed"


async def test_sync_client_ends_after_close() -> None:
    """``close()`` (twice is fine) stops the background thread."""
    server = StreamServer(send_then_hold(quote_payload("MSFT", 3)))

    def run(url: str) -> tuple[Quote, bool]:
        client = SyncQuotesClient(url)
        client.start()
        first = next(client)
        client.close()
        client.close()  # idempotent
        alive = any(t.name == "quotes-client" and t.is_alive() for t in threading.enumerate())
        return first, alive

    async with server:
        with anyio.fail_after(20):
            first, alive = await to_thread.run_sync(run, server.url())
    assert first == make_quote("MSFT", 3)
    assert not alive


async def test_sync_client_changes_its_filter_live() -> None:
    """subscribe() blocks until the server's reply; the quotes of the new ticker follow."""

    async def handler(ws: ServerConnection, index: int) -> None:
        # "subscribe" on the open connection, or "set" when the change beat the handshake
        message = json.loads(await ws.recv())
        assert message in (
            {"action": "subscribe", "tickers": ["MSFT"]},
            {"action": "set", "tickers": ["AAPL", "MSFT"]},
        )
        await ws.send('{"event":"subscribed","tickers":["AAPL","MSFT"]}')
        await ws.send(quote_payload("MSFT", 5))
        await ws.wait_closed()

    def run(url: str) -> tuple[TickerFilter, TickerFilter | None, Quote]:
        with SyncQuotesClient(url, tickers=["AAPL"]) as client:
            confirmed = client.subscribe("MSFT")
            return confirmed, client.tickers, next(client)

    async with StreamServer(handler) as server:
        with anyio.fail_after(20):
            confirmed, current, quote = await to_thread.run_sync(run, server.url())
    assert confirmed == current == TickerFilter.of(["AAPL", "MSFT"])
    assert quote == make_quote("MSFT", 5)
