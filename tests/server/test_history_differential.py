"""
The deployment's history answers resumes like the per-process one.

Hypothesis draws publications and resumes. The same quotes go to a per-process stream
(the ``memory`` backend: the engine assigns positions) and, through a real private
``redis-server``, to the ``redis`` backend: an instance that sequences them
(:class:`~quotes_server.sources.sequenced.SequencedSource`, holding the lease) and a
second instance that starts part-way (it loads the window from Redis, then follows).
Every resume, asked of the second instance, must answer what the memory backend
answers for the same position: ``recovered`` and the same replayed quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from quotes_core import (
    TEXT_CODEC,
    Mode,
    Position,
    Stream,
    StreamItem,
    StreamOptions,
    TickerFilter,
    parse_quote,
    render,
)
from quotes_core.testing import upstream_message
from quotes_server.sources import SourceState, StoredQuote
from quotes_server.sources.sequenced import SequencedSource
from tests.helpers.processes import RedisServer, eventually

SIZE = 6  # a small window, so that resumes fall out of it
TICKERS = ["AAPL", "MSFT", "GOOGL"]


class EngineSink:
    """The runtime's part, on a stream of JSON text (what the sequenced source needs)."""

    def __init__(self) -> None:
        self.stream: Stream[str] = Stream(history_size=SIZE, history_age=600)
        self.state = SourceState.CONNECTING

    def on_message(self, raw: bytes) -> None:
        raise AssertionError("a sequenced source hands over positioned quotes only")

    def on_live(self, raw: bytes) -> bool:
        return True  # plain clients: none here (the resumes are what is compared)

    def on_positioned(self, raw: bytes, seq: int, epoch: str) -> None:
        quote, text = parse_quote(raw)
        self.stream.publish_at(quote, text, seq, epoch, 0.0)

    def begin_epoch(self, epoch: str, seq: int) -> None:
        if epoch != self.stream.epoch:
            self.stream.restore(epoch, seq, ())

    def restore(self, epoch: str | None, seq: int, window: list[StoredQuote]) -> None:
        if epoch is None:
            self.stream.new_epoch()
            return
        items = []
        for stored in window:
            quote, text = parse_quote(stored.raw)
            items.append(StreamItem(stored.seq, epoch, quote.ticker, text, 0.0))
        self.stream.restore(epoch, seq, items)

    def position(self) -> tuple[str, int]:
        return self.stream.epoch, self.stream.seq

    def on_state(self, state: SourceState) -> None:
        self.state = state

    def room(self) -> int:
        return 1000

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        pass


def answer(stream: Stream[str], tickers: frozenset[str], since: Position) -> tuple[bool, list[Any]]:
    """``recovered`` and the replayed quotes (ticker, volume) of a resume from ``since``."""
    sub = stream.open(TickerFilter(tickers), Mode.FIFO, StreamOptions(seq=True, since=since), 0.0)
    frames, _ = render(sub.take(0.0), sub.options, TEXT_CODEC)
    stream.close(sub)
    event, *quotes = (json.loads(f) for f in frames)
    return event["recovered"], [(q["ticker"], q["volume"]) for q in quotes]


@contextlib.asynccontextmanager
async def instance(url: str, channel: str) -> AsyncIterator[tuple[SequencedSource, EngineSink]]:
    source = SequencedSource(
        url, channel, history_size=SIZE, history_age=600, lease=0.5, grace_period=5
    )
    sink = EngineSink()
    task = asyncio.get_running_loop().create_task(source.run(sink))
    try:
        await eventually(lambda: sink.state is SourceState.UP, what="the instance up")
        yield source, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reaches(stream: Stream[str], seq: int) -> Callable[[], bool]:
    return lambda: stream.seq >= seq


Op = tuple[str, Any]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(TICKERS)),
        st.tuples(
            st.just("resume"),
            st.tuples(st.frozensets(st.sampled_from(TICKERS), min_size=1), st.integers(0, 12)),
        ),
        st.tuples(st.just("second"), st.none()),
    ),
    min_size=1,
    max_size=25,
)


async def scenario(url: str, steps: list[Op]) -> None:
    channel = f"diff.{uuid.uuid4().hex[:8]}"
    memory: Stream[str] = Stream(history_size=SIZE, history_age=600, epoch="memory")
    publisher = Redis.from_url(url)
    async with contextlib.AsyncExitStack() as stack:
        first, first_sink = await stack.enter_async_context(instance(url, channel))
        await eventually(lambda: first.role == "sequencing", what="the first sequencing")
        base = first_sink.stream.seq
        asked = first_sink
        published = 0
        for kind, arg in steps:
            if kind == "publish":
                published += 1
                raw = upstream_message(arg, published)
                quote, text = parse_quote(raw)
                memory.publish(quote, text, 0.0)
                await publisher.publish(channel, raw)
                reached = reaches(asked.stream, base + published)
                await eventually(reached, what="the quote at its position")
            elif kind == "second" and asked is first_sink:
                _, asked = await stack.enter_async_context(instance(url, channel))
                assert asked.stream.epoch == first_sink.stream.epoch
            elif kind == "resume":
                tickers, back = arg
                at = max(0, published - back)
                mem = answer(memory, tickers, Position("memory", at))
                red = answer(asked.stream, tickers, Position(asked.stream.epoch, base + at))
                assert red == mem, (steps, at)
    await publisher.aclose()


@pytest.fixture(scope="module")
def shared_redis() -> Any:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_the_redis_history_answers_resumes_like_the_memory_one(
    shared_redis: RedisServer, steps: list[Op]
) -> None:
    asyncio.run(scenario(shared_redis.url, steps))
