"""The ``quotes-client`` command, run as a real subprocess."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import anyio
import pytest

from quotes_client.__main__ import format_quote
from quotes_client.testing import ScriptedServer
from quotes_core import TOKEN_EXPIRED_REASON
from quotes_core.testing import make_quote, quote_payload
from tests.client.servers import StreamServer, eventually, read_lines, send_then_hold, stderr_of
from tests.helpers.processes import free_port

pytestmark = pytest.mark.anyio


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "quotes_client", *args]


async def test_cli_prints_quotes_and_exits_0_on_ctrl_c() -> None:
    """Text lines show ticker, close, timestamp and latency; SIGINT ends it with status 0."""
    handler = send_then_hold(quote_payload("AAPL", 0), quote_payload("MSFT", 1))
    async with StreamServer(handler) as server:
        process = await anyio.open_process(cli(server.url(), "--tickers", "aapl", "msft"))
        async with process:
            lines = await read_lines(process, 2)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                status = await process.wait()
    assert status == 0
    assert lines[0].split()[:3] == ["AAPL", "150.9", "2026-02-12T10:30:00.000000Z"]
    assert lines[1].split()[0] == "MSFT"
    assert lines[0].endswith(" ms")
    assert server.requests[0].path == "/ws/quotes?tickers=AAPL,MSFT"
    assert server.close_codes == [1000]


async def test_cli_closes_cleanly_on_sigterm() -> None:
    """SIGTERM closes the connection with 1000 and exits with status 0."""
    async with StreamServer(send_then_hold(quote_payload())) as server:
        process = await anyio.open_process(cli(server.url(), "-q"))
        async with process:
            await read_lines(process, 1)
            process.terminate()
            with anyio.fail_after(20):
                status = await process.wait()
        await eventually(lambda: len(server.close_codes) == 1, what="the close")
    assert status == 0
    assert server.close_codes == [1000]


async def test_cli_json_format_is_the_quote_plus_latency() -> None:
    """``--format json`` prints the canonical quote with a ``latency_ms`` field."""
    async with StreamServer(send_then_hold(quote_payload("AAPL", 5))) as server:
        process = await anyio.open_process(cli(server.url(), "--format", "json", "-q"))
        async with process:
            (line,) = await read_lines(process, 1)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                await process.wait()
    data = json.loads(line)
    latency = data.pop("latency_ms")
    assert isinstance(latency, float)
    assert data == json.loads(make_quote("AAPL", 5).to_json())


async def test_cli_exits_2_on_403() -> None:
    """A rejected handshake prints the status and reason and exits with status 2, no retry."""
    async with StreamServer(reject=lambda i: (403, "Origin not allowed")) as server:
        process = await anyio.open_process(cli(server.url(), "--origin", "http://evil.example"))
        async with process:
            with anyio.fail_after(20):
                err = await stderr_of(process)
                status = await process.wait()
    assert status == 2
    assert "HTTP 403" in err
    assert "Origin not allowed" in err
    assert len(server.requests) == 1


async def test_cli_rejects_bad_tickers_without_connecting() -> None:
    """An invalid ticker is a usage error (status 2) before any connection."""
    async with StreamServer() as server:
        process = await anyio.open_process(cli(server.url(), "--tickers", "AAPL;DROP"))
        async with process:
            with anyio.fail_after(20):
                err = await stderr_of(process)
                status = await process.wait()
    assert status == 2
    assert "invalid ticker" in err
    assert server.requests == []


def test_format_quote_text_columns() -> None:
    """The text format is ticker, close, timestamp and latency in milliseconds."""
    quote = make_quote("BRK.B", 0)
    line = format_quote(quote, "text", quote.timestamp.timestamp() + 0.0125)
    assert line.split() == ["BRK.B", "150.9", "2026-02-12T10:30:00.000000Z", "12.5", "ms"]


async def test_cli_exits_1_when_retries_are_exhausted() -> None:
    """With ``--max-retries 0`` and nothing listening, the command gives up with status 1."""
    url = f"ws://127.0.0.1:{free_port()}/ws"
    process = await anyio.open_process(cli(url, "--max-retries", "0"))
    async with process:
        with anyio.fail_after(20):
            err = await stderr_of(process)
            status = await process.wait()
    assert status == 1
    assert "gave up after 1 failed attempt;" in err


async def test_cli_token_command_renews_an_expired_token(tmp_path: Path) -> None:
    """--token-command runs before each connection; "Token expired" reconnects, not exits."""
    counter = tmp_path / "n"
    command = f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; echo t$n"
    async with ScriptedServer() as server:
        process = await anyio.open_process(cli(server.url, "-q", "--token-command", command))
        async with process:
            await server.wait_connections(1)
            await server.close_all(1008, TOKEN_EXPIRED_REASON)
            await server.wait_connections(1)  # the client is back
            server.publish(make_quote("AAPL", 7))
            (line,) = await read_lines(process, 1)
            process.terminate()
            with anyio.fail_after(20):
                status = await process.wait()
    assert status == 0
    assert line.split()[0] == "AAPL"
    assert [h.headers.get("Authorization") for h in server.handshakes] == ["Bearer t1", "Bearer t2"]


async def test_cli_token_is_sent_as_a_bearer_header() -> None:
    async with ScriptedServer() as server:
        process = await anyio.open_process(cli(server.url, "-q", "--token", "static-1"))
        async with process:
            await server.wait_connections(1)
            process.terminate()
            with anyio.fail_after(20):
                await process.wait()
    assert server.handshakes[0].headers.get("Authorization") == "Bearer static-1"
