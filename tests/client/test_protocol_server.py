"""The client's opt-in protocol against the real quotes-server and a private Redis."""

from __future__ import annotations

import anyio
import pytest

from quotes_client import Backoff, ConnectionEvent, QuotesClient, Recovered
from quotes_client.transport import WebSocketConnection
from quotes_core import TickerFilter
from quotes_core.testing import upstream_message
from tests.client.servers import RecordingSleep, events_of, take
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.server import CHANNEL, StartServer

pytestmark = pytest.mark.anyio


def publish_and_wait(redis: RedisServer, server: ServerProcess, messages: list[bytes]) -> None:
    """Publish, then wait until the server has read every message."""
    before = server.metric("quotes_upstream_messages_total")
    redis.publish_many(CHANNEL, messages)
    wait_until(
        lambda: server.metric("quotes_upstream_messages_total") >= before + len(messages),
        what="server read the published quotes",
    )


async def test_resume_after_a_tcp_drop_yields_exactly_the_missed_quotes(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """Cut off, quotes go on; the client comes back with since= and misses nothing."""
    server = start_server(redis_server)
    seen: list[ConnectionEvent] = []
    client = QuotesClient(
        f"{server.ws_url}/ws/quotes",
        tickers=["AAPL", "MSFT"],
        resume=True,
        sleep=gated_sleep,
        backoff=Backoff(jitter=0),
        on_event=seen.append,
    )
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
        )
        assert [q.volume for q in await take(client, 2)] == [1, 2]
        conn = client._loop.conn
        assert isinstance(conn, WebSocketConnection)
        conn.ws.transport.abort()  # the client's TCP connection drops
        await gated_sleep.wait_calls(1)
        wait_until(lambda: server.metric("quotes_ws_connections") == 0, what="the drop")
        missed = [
            upstream_message("AAPL", 3),
            upstream_message("GOOGL", 4),
            upstream_message("MSFT", 5),
        ]
        publish_and_wait(redis_server, server, missed)
        gated_sleep.release()
        assert [q.volume for q in await take(client, 2)] == [3, 5]
        stats = client.stats
    assert [e.recovered for e in events_of(Recovered, seen)] == [True]
    assert (stats.recovered, stats.unrecovered, stats.gaps) == (1, 0, 0)


async def test_live_subscribe_is_kept_across_a_server_restart(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """subscribe() on the open connection; after a restart the new filter still applies."""
    first = start_server(redis_server)
    client = QuotesClient(
        f"{first.ws_url}/ws/quotes", tickers=["AAPL"], sleep=gated_sleep, backoff=Backoff(jitter=0)
    )
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        assert await client.subscribe(["msft"]) == TickerFilter.of(["AAPL", "MSFT"])
        redis_server.publish_many(
            CHANNEL, [upstream_message("GOOGL", 1), upstream_message("MSFT", 2)]
        )
        assert [q.volume for q in await take(client, 1)] == [2]
        port = first.port
        first.stop()
        await gated_sleep.wait_calls(1)
        second = start_server(redis_server, port=port)
        gated_sleep.release()
        with anyio.fail_after(10):
            await client.wait_connected()
        wait_until(lambda: second.metric("quotes_ws_connections") == 1, what="reconnect")
        redis_server.publish_many(
            CHANNEL, [upstream_message("GOOGL", 3), upstream_message("MSFT", 4)]
        )
        assert [q.volume for q in await take(client, 1)] == [4]
