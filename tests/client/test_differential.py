"""
The scripted server answers like quotes-server: one list of scenarios, run against
both with the same quotes and the same client messages, must give the same frames.

Both servers get every quote in the same order from their start, so their positions
(``seq``) agree; epochs are random per server and compared as ``<epoch>``, a
``pong``'s clock as ``<time>``. ``max_hz`` is compared at a rate slow enough (one
quote per ticker every 10 s) that what it holds back does not depend on timing;
``mode=latest`` is not compared. Each step waits for the frames it expects before
the next one, so the order of quotes and replies does not depend on timing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import ClientConnection

from quotes_client.testing import ScriptedServer
from quotes_core import parse_quote
from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import open_ws

pytestmark = pytest.mark.anyio


@dataclass
class Target:
    """One server under comparison: how to reach it and how to publish to it."""

    name: str
    ws_url: str
    publish_raw: Callable[[list[bytes]], Awaitable[None]]
    frames: list[str] = field(default_factory=list)

    async def publish(self, *quotes: bytes) -> None:
        await self.publish_raw(list(quotes))


Step = Callable[[Target], Awaitable[None]]


def _normal(frame: str) -> str:
    """The frame with what legitimately differs between servers replaced."""
    frame = re.sub(r'"epoch":"[A-Za-z0-9_-]+"', '"epoch":"<epoch>"', frame)
    return re.sub(r'"server_time":"[^"]*"', '"server_time":"<time>"', frame)


async def _read(ws: ClientConnection, target: Target, count: int) -> list[str]:
    """Read ``count`` frames, record them normalised, return them as sent."""
    raw: list[str] = []
    for _ in range(count):
        try:
            frame = await asyncio.wait_for(ws.recv(decode=True), 10)
        except TimeoutError:
            raise AssertionError(
                f"{target.name}: {len(raw)} of {count} frames, after {target.frames[-3:]}"
            ) from None
        assert isinstance(frame, str)
        raw.append(frame)
        target.frames.append(_normal(frame))
    return raw


@asynccontextmanager
async def _client(target: Target, query: str) -> AsyncIterator[ClientConnection]:
    async with open_ws(f"{target.ws_url}/ws/quotes{query}") as ws:
        yield ws


QUOTES = [
    upstream_message(t, i) for i, t in enumerate(["AAPL", "MSFT", "GOOG", "AAPL", "TSLA"] * 4)
]


async def plain_and_filters(t: Target) -> None:
    """The contract's stream: every ticker, then a case-insensitive filter."""
    async with _client(t, "") as every, _client(t, "?tickers=aapl,MSFT") as some:
        await t.publish(*QUOTES[:5])
        await _read(every, t, 5)
        await _read(some, t, 3)


async def snapshot_seq_and_batch(t: Target) -> None:
    """snapshot=1 (alone, with seq=1), then live quotes one by one with batch=1."""
    async with _client(t, "?tickers=AAPL,GOOG&snapshot=1") as snap:
        await _read(snap, t, 2)
        async with _client(t, "?seq=1&snapshot=1&tickers=TSLA,MSFT") as seq:
            await _read(seq, t, 2)
            async with _client(t, "?batch=1&seq=1&tickers=AAPL") as batch:
                await t.publish(QUOTES[6])  # MSFT
                await _read(seq, t, 1)
                await t.publish(QUOTES[8])  # AAPL
                await _read(batch, t, 1)
                await _read(snap, t, 1)


async def resume(t: Target) -> None:
    """since= inside the window (the replay), and from another epoch (the snapshot)."""
    async with _client(t, "?seq=1") as ws:
        await t.publish(QUOTES[9])  # TSLA
        (seen,) = await _read(ws, t, 1)
    position = json.loads(seen)
    await t.publish(*QUOTES[10:14])  # AAPL, MSFT, GOOG, AAPL
    since = f"{position['epoch']}:{position['seq']}"
    async with _client(t, f"?tickers=AAPL,GOOG&since={since}") as ws:
        await _read(ws, t, 4)  # recovered, then AAPL, GOOG, AAPL
    async with _client(t, "?tickers=TSLA&snapshot=1&since=other:1") as ws:
        await _read(ws, t, 2)  # recovered false, TSLA's snapshot


async def actions(t: Target) -> None:
    """Every action and every error code, on a plain client and on a snapshot=1 client."""
    async with _client(t, "?tickers=AAPL") as plain, _client(t, "?tickers=AAPL&snapshot=1") as snap:
        for message in (
            '{"action":"ping","id":"p1"}',
            '{"action":"subscribe","tickers":["msft","GOOG"]}',
            '{"action":"unsubscribe","tickers":["GOOG"]}',
            '{"action":"set","tickers":["*"]}',
            '{"action":"unsubscribe","tickers":["AAPL"]}',
            '{"action":"set","tickers":["TSLA"]}',
            "not json",
            '{"action":"dance"}',
            '{"action":"subscribe","tickers":"AAPL"}',
            '{"action":"subscribe","tickers":["AAPL;"]}',
            json.dumps({"action": "set", "tickers": [f"T{i}" for i in range(1001)]}),
            '{"action":"set","tickers":' + "[" * 1000 + "]" * 1000 + "}",
            json.dumps({"action": "ping", "id": "x" * 200}),
        ):
            for ws in (plain, snap):
                await ws.send(message)
                await _read(ws, t, 1)
                if ws is snap and '"event":"subscribed"' in t.frames[-1]:
                    await _read(ws, t, _snapshot_size(message))
        await t.publish(QUOTES[14], QUOTES[15])  # TSLA, AAPL
        await _read(plain, t, 1)
        await _read(snap, t, 1)


async def max_hz(t: Target) -> None:
    """
    max_hz holds a ticker's later quotes back (the newest one only), lets another
    ticker's first one through, replies to an action at once, and forgets a held
    quote of a ticker the client drops.
    """
    async with _client(t, "?tickers=AAPL,MSFT&max_hz=0.1&seq=1") as ws:
        got: list[str] = []
        await t.publish(QUOTES[0], QUOTES[3], QUOTES[15])  # AAPL, then two AAPL held
        got += await _read(ws, t, 1)
        await t.publish(QUOTES[1])  # MSFT: its first quote goes out
        got += await _read(ws, t, 1)
        await ws.send('{"action":"ping","id":1}')
        got += await _read(ws, t, 1)  # the pong, while AAPL's newest is still held
        await ws.send('{"action":"unsubscribe","tickers":["AAPL"]}')
        got += await _read(ws, t, 1)
        await t.publish(QUOTES[6], QUOTES[4])  # MSFT (held: its second), TSLA (not wanted)
        await ws.send('{"action":"set","tickers":["TSLA"]}')
        got += await _read(ws, t, 1)  # subscribed; the held AAPL and MSFT are gone
        await t.publish(QUOTES[9])  # TSLA
        got += await _read(ws, t, 1)
    shown = [json.loads(f).get("ticker") or json.loads(f)["event"] for f in got]
    assert shown == ["AAPL", "MSFT", "pong", "subscribed", "subscribed", "TSLA"], t.name


def _snapshot_size(message: str) -> int:
    # the snapshot quotes that follow a snapshot=1 client's "subscribed" reply in
    # the actions scenario (the tickers it adds that have a latest quote)
    return {
        '{"action":"subscribe","tickers":["msft","GOOG"]}': 2,
        '{"action":"set","tickers":["*"]}': 2,  # GOOG again, TSLA
    }.get(message, 0)


SCENARIOS: list[Step] = [plain_and_filters, snapshot_seq_and_batch, resume, actions, max_hz]


async def _run(target: Target) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for scenario in SCENARIOS:
        target.frames = []
        await scenario(target)
        out[scenario.__name__] = target.frames
    return out


async def test_scripted_server_answers_like_quotes_server(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Every scenario gives byte-identical frames (epochs and clocks aside) on both servers."""
    server: ServerProcess = start_server(redis_server)

    async def to_redis(raw: list[bytes]) -> None:
        before = server.metric("quotes_upstream_messages_total")
        redis_server.publish_many(CHANNEL, raw)
        wait_until(
            lambda: server.metric("quotes_upstream_messages_total") == before + len(raw),
            what="the server to receive the quotes",
        )

    real = Target("quotes-server", server.ws_url, to_redis)
    got_real = await _run(real)

    async with ScriptedServer() as scripted:

        async def to_scripted(raw: list[bytes]) -> None:
            scripted.publish(*(parse_quote(r)[0] for r in raw))

        double = Target("ScriptedServer", f"ws://127.0.0.1:{scripted.port}", to_scripted)
        got_double = await _run(double)

    for name in got_real:
        assert got_double[name] == got_real[name], f"scenario {name} differs"
    assert sum(map(len, got_real.values())) >= 40  # the scenarios did run
