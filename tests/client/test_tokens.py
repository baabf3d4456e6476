"""
Access tokens from the client: a static one, or a provider called before each
connection so that an expiring token leads to a new one and a resumed stream, not
to a stopped client. Against the scripted server (the client's side of it) and
against the real server with short-lived JWTs.
"""

from __future__ import annotations

import time
from itertools import count

import jwt
import pytest

from quotes_client import (
    BackingOff,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    Disconnected,
    Failed,
    FatalClose,
    QuotesClient,
    Recovered,
)
from quotes_client.testing import ScriptedServer
from quotes_core import TOKEN_EXPIRED_REASON
from quotes_core.testing import make_quote, upstream_message
from tests.client.servers import RecordingSleep, events_of, take
from tests.helpers.processes import RedisServer, eventually
from tests.helpers.server import CHANNEL, StartServer

pytestmark = pytest.mark.anyio

SECRET = "client-token-secret-0123456789-0123456789"


def bearer(server: ScriptedServer) -> list[str | None]:
    return [h.headers.get("Authorization") for h in server.handshakes]


async def test_a_static_token_is_sent_and_its_expiry_stops_the_client() -> None:
    events: list[ConnectionEvent] = []
    async with (
        ScriptedServer() as server,
        QuotesClient(
            server.url, token="tok-1", sleep=RecordingSleep(), on_event=events.append
        ) as client,
    ):
        await server.wait_connections(1)
        await server.close_all(1008, TOKEN_EXPIRED_REASON)
        with pytest.raises(FatalClose) as raised:
            await take(client, 1)
    assert (raised.value.code, raised.value.reason) == (1008, TOKEN_EXPIRED_REASON)
    assert bearer(server) == ["Bearer tok-1"]
    assert len(events_of(Failed, events)) == 1


async def test_a_provider_gives_each_connection_a_fresh_token() -> None:
    numbers = count(1)
    sleep = RecordingSleep()
    events: list[ConnectionEvent] = []

    async def provider() -> str:  # async, as a call to a token service would be
        return f"tok-{next(numbers)}"

    async with (
        ScriptedServer() as server,
        QuotesClient(server.url, token=provider, sleep=sleep, on_event=events.append) as client,
    ):
        await server.wait_connections(1)
        await server.close_all(1008, TOKEN_EXPIRED_REASON)
        await server.wait_connections(1)  # the client is back
        server.publish(make_quote("AAPL", 1))
        assert [q.volume for q in await take(client, 1)] == [1]
    assert bearer(server) == ["Bearer tok-1", "Bearer tok-2"]
    assert sleep.delays == []  # reconnected at once: no backoff for an expired token
    assert [e.delay for e in events_of(BackingOff, events)] == [0.0]
    assert events_of(Disconnected, events)[0].code == 1008
    assert not events_of(Failed, events)


async def test_other_policy_closes_still_stop_a_client_with_a_provider() -> None:
    async with (
        ScriptedServer() as server,
        QuotesClient(server.url, token=lambda: "tok", sleep=RecordingSleep()) as client,
    ):
        await server.wait_connections(1)
        await server.close_all(1008, "Policy violation: too many messages")
        with pytest.raises(FatalClose):
            await take(client, 1)


async def test_a_failing_provider_is_retried_with_backoff() -> None:
    calls = 0

    def provider() -> str:  # sync works too
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("token service unreachable")
        return "tok-ok"

    sleep = RecordingSleep()
    events: list[ConnectionEvent] = []
    async with (
        ScriptedServer() as server,
        QuotesClient(server.url, token=provider, sleep=sleep, on_event=events.append),
    ):
        await server.wait_connections(1)
    (failed,) = events_of(ConnectFailed, events)
    assert "token provider failed: ConnectionError: token service unreachable" in failed.reason
    assert not failed.fatal
    assert len(sleep.delays) == 1
    assert bearer(server) == ["Bearer tok-ok"]  # nothing was sent without a token


async def test_an_expiring_jwt_is_renewed_and_the_stream_resumes_on_the_real_server(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    server = start_server(redis_server, jwt_secret=SECRET, jwt_leeway=0)
    minted: list[str] = []

    def provider() -> str:
        token = jwt.encode({"exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
        minted.append(token)
        return token

    events: list[ConnectionEvent] = []
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with QuotesClient(
        url, token=provider, resume=True, sleep=RecordingSleep(), on_event=events.append
    ) as client:
        await client.wait_connected()
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert [q.volume for q in await take(client, 1)] == [1]
        # the server closes at expiry; the client reconnects with a new token and resumes
        await eventually(lambda: len(events_of(Connected, events)) == 2, timeout=30)
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        assert [q.volume for q in await take(client, 1)] == [2]
    (closed, *_) = events_of(Disconnected, events)
    assert closed.code == 1008
    assert closed.reason == f"closed by the server: 1008 {TOKEN_EXPIRED_REASON!r}"
    (recovered,) = events_of(Recovered, events)
    assert recovered.recovered
    assert len(minted) >= 2
    assert server.metric("quotes_limit_hits_total", 'limit="token_expired"') >= 1
