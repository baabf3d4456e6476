"""
The runtime in process: a fake source and fake ASGI sockets around the real Runtime,
Connection, Session and write rounds (no uvicorn, no Redis), like h11's
``ConnectionPair``. What a user sees is also tested end to end with the real parts;
these pin each module's part and run in milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from quotes_core import Mode, Position, StreamOptions, TickerFilter
from quotes_core.testing import upstream_message
from quotes_server.connection import Connection
from quotes_server.metrics import Metrics
from quotes_server.runtime import GC_YOUNG_THRESHOLD, Runtime
from quotes_server.settings import Settings
from quotes_server.sources import Sink, SourceState

pytestmark = pytest.mark.anyio


class FakeSource:
    """A source the test drives: it hands its sink over and waits."""

    name = "fake"
    reconnects = 0
    interest = None
    sequencing = None
    assigns_positions = False

    def __init__(self) -> None:
        self.state = SourceState.UP
        self.sink: Sink | None = None

    async def run(self, sink: Sink) -> None:
        self.sink = sink
        sink.on_state(self.state)
        await asyncio.Event().wait()


@dataclass
class FakeSocket:
    """The ASGI side of one WebSocket: what the server sent, what the client sends."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: bool = False
    """A client that reads nothing: every data frame send waits forever."""

    async def send(self, message: dict[str, Any]) -> None:
        if self.stalled and message["type"] == "websocket.send":
            await asyncio.Event().wait()
        self.sent.append(message)
        self.changed.set()

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    def client_sends(self, text: str) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": text})

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]

    @property
    def close(self) -> tuple[int, str] | None:
        closes = [(m["code"], m["reason"]) for m in self.sent if m["type"] == "websocket.close"]
        return closes[0] if closes else None

    async def wait(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Harness:
    runtime: Runtime
    source: FakeSource
    tasks: list[asyncio.Task[int | None]] = field(default_factory=list)

    def publish(self, ticker: str, seq: int = 0) -> None:
        self.runtime.on_message(upstream_message(ticker, seq))

    def connect(
        self, tickers: str | None = None, options: StreamOptions | None = None
    ) -> tuple[Connection, FakeSocket]:
        sock = FakeSocket()
        flt = TickerFilter(frozenset(tickers.split(","))) if tickers else TickerFilter()
        conn = self.runtime.open(
            flt,
            Mode.FIFO,
            options or StreamOptions(),
            sock.send,
            sock.receive,
            client_id=f"c{len(self.tasks)}",
            remote="127.0.0.1:1",
            host="127.0.0.1",
            frames=None,
        )
        self.runtime.add(conn)
        self.tasks.append(asyncio.get_running_loop().create_task(conn.serve()))
        return conn, sock


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Harness]:
    source = FakeSource()
    runtime = Runtime(Settings(**settings), source, Metrics())
    await runtime.start()
    harness = Harness(runtime, source)
    try:
        yield harness
    finally:
        await runtime.stop()
        for task in harness.tasks:
            task.cancel()
        await asyncio.gather(*harness.tasks, return_exceptions=True)


def tickers_of(texts: list[str]) -> list[str]:
    return [json.loads(t).get("ticker") or json.loads(t)["event"] for t in texts]


async def test_quotes_fan_out_by_filter_and_invalid_ones_are_counted() -> None:
    async with running() as h:
        _, every = h.connect()
        _, some = h.connect("MSFT")
        h.publish("AAPL", 1)
        h.runtime.on_message(b'{"ticker": "AAPL"}')  # invalid: no price
        h.publish("MSFT", 2)
        await every.wait(lambda: len(every.texts) == 2)
        await some.wait(lambda: len(some.texts) == 1)
        assert tickers_of(every.texts) == ["AAPL", "MSFT"]
        assert tickers_of(some.texts) == ["MSFT"]
        assert every.texts[1] == some.texts[0]  # one encoding, shared
        assert h.runtime.metrics.hot.received == 3
        assert len(h.runtime.stream) == 2


async def test_an_action_is_answered_in_order_and_changes_the_filter() -> None:
    async with running() as h:
        _, sock = h.connect("AAPL")
        h.publish("MSFT", 1)  # not wanted yet
        sock.client_sends('{"action":"subscribe","tickers":["msft"]}')
        await sock.wait(lambda: len(sock.texts) == 1)
        h.publish("MSFT", 2)
        await sock.wait(lambda: len(sock.texts) == 2)
        assert tickers_of(sock.texts) == ["subscribed", "MSFT"]
        assert json.loads(sock.texts[0])["tickers"] == ["AAPL", "MSFT"]
        assert h.runtime.stream.tickers() == {"AAPL", "MSFT"}


async def test_a_resume_replays_from_the_engine_and_a_new_epoch_ends_it() -> None:
    async with running() as h:
        epoch = h.runtime.stream.epoch
        for n in range(1, 4):
            h.publish("AAPL", n)
        options = StreamOptions(seq=True, since=Position(epoch, 1))
        _, sock = h.connect(options=options)
        await sock.wait(lambda: len(sock.texts) == 3)
        recovered, *replay = map(json.loads, sock.texts)
        assert recovered == {"event": "recovered", "recovered": True, "epoch": epoch, "seq": 3}
        assert [q["seq"] for q in replay] == [2, 3]
        h.runtime.on_state(SourceState.RECONNECTING)
        h.runtime.on_state(SourceState.UP)  # quotes may have been lost meanwhile
        assert h.runtime.stream.epoch != epoch
        _, late = h.connect(options=options)
        await late.wait(lambda: len(late.texts) == 1)
        assert json.loads(late.texts[0])["recovered"] is False


async def test_upstream_down_past_the_grace_closes_everyone_with_1011() -> None:
    async with running() as h:
        conn, sock = h.connect()
        h.runtime.on_state(SourceState.DOWN)
        await sock.wait(lambda: sock.close is not None)
        assert sock.close == (1011, "Internal server error")
        assert conn.close_code == 1011


async def test_a_client_that_sends_without_reading_gets_1013() -> None:
    async with running(client_queue_limit=64 * 1024) as h:
        _, sock = h.connect()
        sock.stalled = True
        big = json.dumps({"action": "ping", "id": "x" * 90})
        for _ in range(700):  # ~150 bytes of pong each, never read: past 64 KiB
            sock.client_sends(big)
        await sock.wait(lambda: sock.close is not None)
        assert sock.close == (1013, "Slow consumer: too much queued")
        registry = h.runtime.metrics.registry
        hits = registry.get_sample_value("quotes_limit_hits_total", {"limit": "client_queue"})
        assert hits == 1  # once: what it sends after our close is not acted on


async def test_the_sink_hands_a_bulk_reader_its_room_per_write_round() -> None:
    async with running() as h:
        budget = h.runtime.room()
        assert budget > 0
        h.connect()
        h.publish("AAPL")
        assert h.runtime.room() == budget - 1  # a round is pending: this message counts


async def test_max_hz_held_quotes_go_out_when_the_session_timer_fires() -> None:
    async with running() as h:
        conn, sock = h.connect("AAPL", StreamOptions(max_hz=20.0))
        for n in (1, 2, 3):
            h.publish("AAPL", n)
        await sock.wait(lambda: len(sock.texts) == 2)
        assert [json.loads(t)["volume"] for t in sock.texts] == [1, 3]  # 2 was conflated
        session = conn.session
        assert session is not None
        assert session.subscriber.next_due() is None  # nothing held: no timer


async def test_a_closed_connection_is_freed_at_once_not_by_the_cycle_collector() -> None:
    """No reference cycle keeps an ended connection (its tasks' tracebacks would)."""
    gc.disable()
    try:
        async with running() as h:
            conn, sock = h.connect("AAPL", StreamOptions(seq=True))
            alive = weakref.ref(conn)
            h.publish("AAPL", 1)
            await sock.wait(lambda: len(sock.texts) == 1)
            sock.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
            assert await h.tasks.pop() == 1000
            h.runtime.remove(conn)
            del conn
            assert alive() is None
    finally:
        gc.enable()


async def test_the_collectors_first_threshold_is_raised_while_runtimes_run() -> None:
    """Raised from the first start to the last stop, then given back as it was."""
    before = gc.get_threshold()
    assert before[0] != GC_YOUNG_THRESHOLD
    async with running() as one:
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        async with running():
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])  # one still runs
        await one.runtime.stop()  # a second stop gives nothing back twice
    assert gc.get_threshold() == before
