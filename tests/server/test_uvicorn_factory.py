"""
Run as a plain ``uvicorn ... create_app --factory``, the app redacts its logs and
refuses to serve without our protocols and proxy rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotes_core.testing import upstream_message
from quotes_server.guard import uvicorn_command
from quotes_server.settings import Settings
from tests.helpers.processes import RedisServer, ServerProcess
from tests.helpers.server import CHANNEL
from tests.helpers.uvicorn import PROTECTED, AnsweringServer, uvicorn_factory
from tests.helpers.ws import handshake_rejection, open_ws, recv_json

pytestmark = pytest.mark.anyio

TOKEN = "st-uvicorn-5c2e81"
REFUSAL = "This server was started without its protections:"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Servers a test starts; each is stopped by PID afterwards."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _start(
    started: list[ServerProcess],
    redis: RedisServer,
    argv: list[str],
    cls: type[ServerProcess] = ServerProcess,
    **settings: str,
) -> ServerProcess:
    env = {"QUOTES_REDIS_URL": redis.url, **{f"QUOTES_{k.upper()}": v for k, v in settings.items()}}
    server = cls(argv, env=env)
    started.append(server)
    return server.start()


async def test_without_our_protocols_every_request_gets_500(
    redis_server: RedisServer, processes: list[ServerProcess]
) -> None:
    """Plain uvicorn: /health and a WebSocket handshake get 500 saying how to start; one ERROR."""
    server = _start(processes, redis_server, uvicorn_factory(), AnsweringServer)
    status, body = server.get("/health")
    assert status == 500
    assert body.startswith(REFUSAL)
    assert "the HTTP protocol is not quotes_server.http_protocol:QuotesHttpProtocol" in body
    assert uvicorn_command(Settings()) in body
    status, _h, ws_body = await handshake_rejection(f"{server.ws_url}/ws/quotes")
    assert (status, ws_body) == (500, body)
    assert server.get("/metrics")[0] == 500
    log = server.log()
    assert len(re.findall(r"ERROR: +refusing every request: This server was started", log)) == 1


@pytest.mark.parametrize(
    ("options", "settings", "missing"),
    [
        (
            [*PROTECTED[:2], "--ws", "websockets-sansio", *PROTECTED[4:]],
            {},
            "the WebSocket protocol is uvicorn.protocols.websockets.websockets_sansio_impl:"
            "WebSocketsSansIOProtocol, not quotes_server.protocol:QuotesWebSocketProtocol",
        ),
        (
            PROTECTED[:4] + PROTECTED[5:],
            {},
            "X-Forwarded-For is trusted from 127.0.0.1/32,::1/128 although "
            "QUOTES_TRUSTED_PROXIES is empty",
        ),
        (
            [*PROTECTED[:4], "--forwarded-allow-ips", "*", *PROTECTED[5:]],
            {"trusted_proxies": "10.0.0.0/8"},
            "X-Forwarded-For is trusted from *, not from QUOTES_TRUSTED_PROXIES (10.0.0.0/8)",
        ),
        (
            PROTECTED[:5],
            {},
            "client messages may be 16777216 bytes, not QUOTES_WS_MAX_SIZE (65536)",
        ),
    ],
    ids=["uvicorn-ws-protocol", "default-proxy-headers", "other-proxies", "default-frame-size"],
)
async def test_each_missing_protection_is_named(
    redis_server: RedisServer,
    processes: list[ServerProcess],
    options: list[str],
    settings: dict[str, str],
    missing: str,
) -> None:
    """Our HTTP protocol in place, anything else that differs from the settings is named: 500."""
    server = _start(processes, redis_server, uvicorn_factory(*options), AnsweringServer, **settings)
    status, body = server.get("/health")
    assert status == 500
    assert f"\n- {missing}" in body
    status, _h, ws_body = await handshake_rejection(f"{server.ws_url}/ws/quotes")
    assert (status, ws_body) == (500, body)


async def test_with_our_protocols_tokens_are_redacted(
    redis_server: RedisServer, processes: list[ServerProcess]
) -> None:
    """The documented uvicorn command serves, and uvicorn's own log lines blank the token."""
    server = _start(processes, redis_server, uvicorn_factory(*PROTECTED), auth_tokens=TOKEN)
    assert server.get(f"/health?access_token={TOKEN}")[0] == 200
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&access_token={TOKEN}") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(ws))["volume"] == 1
    log = server.log()
    assert '"GET /health?access_token=[redacted] HTTP/1.1" 200' in log  # uvicorn.access
    assert '"WebSocket /ws/quotes?tickers=AAPL&access_token=[redacted]" [accepted]' in log
    assert "client c1 connected from 127.0.0.1:" in log  # ours, through uvicorn's handlers
    assert TOKEN not in log
    assert REFUSAL not in log


async def test_trusted_proxies_with_the_matching_uvicorn_option(
    redis_server: RedisServer, processes: list[ServerProcess]
) -> None:
    """With QUOTES_TRUSTED_PROXIES and the same --forwarded-allow-ips, X-Forwarded-For counts."""
    options = [*PROTECTED[:4], "--forwarded-allow-ips", "127.0.0.0/8", *PROTECTED[5:]]
    server = _start(
        processes, redis_server, uvicorn_factory(*options), trusted_proxies="127.0.0.1/8"
    )
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url, additional_headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        assert (await recv_json(ws))["volume"] == 2
    assert "connected from 203.0.113.9:" in server.log()


def test_the_security_page_gives_the_command() -> None:
    """The uvicorn command on the Security page is the one the refusal prints and tests run."""
    command = uvicorn_command(Settings())
    assert command == " ".join(["uvicorn", "quotes_server.app:create_app", "--factory", *PROTECTED])
    page = " ".join(DOCS.read_text().replace("\\\n", " ").split())
    assert command in page
