"""
``rediss://``: the server against a private ``redis-server`` that speaks only TLS,
with a CA and certificates made for the test (:mod:`tests.helpers.tls`).

A real quotes-server streams a quote published over TLS by redis-py (through
``quotes-publish``'s own ``connect``) when the URL names the CA; without it,
default verification refuses the self-signed CA with a clear log line and ``/ready``
stays 503; ``ssl_cert_reqs=none`` connects; the sharded upstream (SSUBSCRIBE on a
single Redis 7, ``CLUSTER SLOTS`` through redis-py) works over TLS too. In this
process: the host name check and a client certificate (``tls-auth-clients yes``).
Skipped, saying so, when the distribution's ``redis-server`` lacks TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quotes_core import ShardMap
from quotes_core.testing import upstream_message
from quotes_server.publish import connect, publish_lines
from quotes_server.sources import SourceState
from quotes_server.sources.redis import RedisSource
from tests.helpers.processes import ServerProcess, TestSetupError, eventually, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.tls import Pki, TlsRedisServer, TlsUnsupported, make_pki
from tests.helpers.ws import handshake_rejection, open_ws, recv_json

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def tls_redis_server(pki: Pki, *, auth_clients: bool = False) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(pki, auth_clients=auth_clients)
    try:
        try:
            server.start()
        except TlsUnsupported as exc:
            pytest.skip(str(exc))
        except TestSetupError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def tls_redis(pki: Pki) -> Iterator[TlsRedisServer]:
    """A private redis-server on a TLS port only, its certificate for 127.0.0.1."""
    with tls_redis_server(pki) as server:
        yield server


def publish(url: str, *messages: bytes, shards: ShardMap | None = None) -> None:
    """Publish with a redis-py client over TLS, made by quotes-publish from the same URL."""
    client = connect(url, sharded=shards is not None)
    try:
        publish_lines(client, CHANNEL, messages, shards)
    finally:
        client.close()


def start(start_server: StartServer, url: str, **settings: object) -> ServerProcess:
    return start_server(None, redis_url=url, grace_period=1, **settings)


@pytest.mark.parametrize("history", ["memory", "redis"])
async def test_a_rediss_url_with_the_ca_streams_quotes(
    tls_redis: TlsRedisServer, pki: Pki, start_server: StartServer, history: str
) -> None:
    """
    ssl_ca_certs: the server subscribes over TLS and a quote published over TLS
    arrives; with --history redis the sequencer's commands and the window's reads go
    over TLS too (the quote has its deployment position).
    """
    url = f"{tls_redis.url}?ssl_ca_certs={pki.ca}"
    server = start(start_server, url, history=history)
    assert json.loads(server.get("/ready")[1])["upstream"] == "up"
    if history == "redis":
        wait_until(
            lambda: json.loads(server.get("/ready")[1])["history"].get("role") == "sequencing",
            what="the server sequencing over TLS",
        )
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&seq=1") as ws:
        publish(url, upstream_message("AAPL", 7))
        quote = await recv_json(ws)
        assert quote["volume"] == 7
        assert quote["epoch"] == json.loads(server.get("/ready")[1])["history"]["epoch"]


async def test_default_verification_refuses_an_unknown_ca(
    tls_redis: TlsRedisServer, start_server: StartServer
) -> None:
    """Without the CA the certificate fails verification: logged clearly, /ready 503."""
    server = start(start_server, tls_redis.url, wait_ready=False)
    wait_until(
        lambda: "CERTIFICATE_VERIFY_FAILED" in server.log(), what="the verification failure log"
    )
    line = next(ln for ln in server.log().splitlines() if "CERTIFICATE_VERIFY_FAILED" in ln)
    assert "redis unavailable at start-up (SSLCertVerificationError:" in line
    assert "retrying" in line
    assert server.get("/ready")[0] == 503
    status, _, _ = await handshake_rejection(f"{server.ws_url}/ws/quotes")
    assert status == 503


async def test_ssl_cert_reqs_none_connects_without_verifying(
    tls_redis: TlsRedisServer, start_server: StartServer
) -> None:
    """ssl_cert_reqs=none: no CA given, the connection is still made (and encrypted)."""
    url = f"{tls_redis.url}?ssl_cert_reqs=none"
    server = start(start_server, url)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=MSFT") as ws:
        publish(url, upstream_message("MSFT", 3))
        assert (await recv_json(ws))["volume"] == 3


async def test_the_sharded_upstream_over_tls(
    tls_redis: TlsRedisServer, pki: Pki, start_server: StartServer
) -> None:
    """--upstream sharded on a TLS Redis 7: CLUSTER SLOTS via redis-py, SSUBSCRIBE via the link."""
    shards = ShardMap(CHANNEL, 4)
    url = f"{tls_redis.url}?ssl_ca_certs={pki.ca}"
    server = start(start_server, url, upstream="sharded", shards=4)
    assert json.loads(server.get("/ready")[1])["shards"]["healthy"] == 4
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT") as ws:
        publish(url, upstream_message("AAPL", 1), upstream_message("MSFT", 2), shards=shards)
        got = {(q["ticker"], q["volume"]) for q in [await recv_json(ws), await recv_json(ws)]}
    assert got == {("AAPL", 1), ("MSFT", 2)}


# --- in this process: the source alone, against the real TLS redis-server ----------------------


class Sink:
    """A recording stand-in for the runtime."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.states: list[SourceState] = []

    def on_message(self, raw: bytes) -> None:
        self.messages.append(raw)

    def on_state(self, state: SourceState) -> None:
        self.states.append(state)

    def room(self) -> int:
        return 1000


@contextlib.asynccontextmanager
async def running(url: str) -> AsyncIterator[tuple[RedisSource, Sink]]:
    source = RedisSource(url, CHANNEL, grace_period=0.5, timeout=2.0, ping_interval=30.0)
    sink = Sink()
    task = asyncio.get_running_loop().create_task(source.run(sink))
    try:
        yield source, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_host_name_is_checked_unless_told_not_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate for another name: refused by default, taken with ssl_check_hostname=false."""
    pki = make_pki(tmp_path, server_names=("redis.internal",))
    with tls_redis_server(pki) as redis:
        url = f"{redis.url}?ssl_ca_certs={pki.ca}"
        async with running(url) as (source, sink):
            await eventually(lambda: source.state is SourceState.DOWN, what="DOWN")
        assert SourceState.UP not in sink.states
        assert "IP address mismatch" in caplog.text
        async with running(url + "&ssl_check_hostname=false") as (source, sink):
            await eventually(lambda: source.state is SourceState.UP, what="UP")


async def test_a_client_certificate_is_shown_when_redis_asks_for_one(pki: Pki) -> None:
    """tls-auth-clients yes: without ssl_certfile the source stays down, with it it subscribes."""
    with tls_redis_server(pki, auth_clients=True) as redis:
        url = f"{redis.url}?ssl_ca_certs={pki.ca}"
        async with running(url) as (source, sink):
            await eventually(lambda: source.state is SourceState.DOWN, what="DOWN")
        assert SourceState.UP not in sink.states
        client = f"&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
        async with running(url + client) as (source, sink):
            await eventually(lambda: source.state is SourceState.UP, what="UP")
            assert redis.publish(CHANNEL, upstream_message("AAPL", 1)) == 1
            await eventually(lambda: len(sink.messages) == 1, what="the quote")
