"""
The single-channel Redis source, in this process: ``RedisSource`` against a fake
master on a loopback socket (:mod:`tests.helpers.fake_redis`) and a recording sink in
place of the runtime. Its state machine (``CONNECTING``, ``UP``, ``RECONNECTING``,
``DOWN`` after the grace period), AUTH from the URL, the write-round budget, and each
way a subscription fails: reset, unsubscribed by the server, no PONG, bytes that are
not RESP. The real ``redis-server`` is tried in ``test_redis_failure.py`` and
``test_redis_reader.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from quotes_server.sources import SourceState
from quotes_server.sources.redis import RedisSource
from tests.helpers.fake_redis import FakeShardNode
from tests.helpers.processes import eventually

pytestmark = pytest.mark.anyio

CHANNEL = "quotes.realtime"
UP = SourceState.UP
DOWN = SourceState.DOWN


class Sink:
    """A recording stand-in for the runtime, with the budget per write round it sets."""

    def __init__(self, room: int = 1000) -> None:
        self.messages: list[bytes] = []
        self.states: list[SourceState] = []
        self.budget = room
        self.rooms = 0

    def on_message(self, raw: bytes) -> None:
        self.messages.append(raw)

    def on_state(self, state: SourceState) -> None:
        self.states.append(state)

    def room(self) -> int:
        self.rooms += 1
        return self.budget


@contextlib.asynccontextmanager
async def running(source: RedisSource, sink: Sink) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(source.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def source_on(node: FakeShardNode, url: str | None = None, **options: float) -> RedisSource:
    settings = {"grace_period": 0.3, "timeout": 2.0, "ping_interval": 30.0, **options}
    return RedisSource(url or f"redis://127.0.0.1:{node.port}", CHANNEL, **settings)


async def subscribed(node: FakeShardNode, source: RedisSource, connections: int = 1) -> None:
    await eventually(
        lambda: CHANNEL in node.subscribed() and node.connections == connections,
        what=f"SUBSCRIBE on connection {connections}",
    )
    await eventually(lambda: source.state is UP, what="the source up")


async def test_messages_on_the_channel_reach_the_sink_in_order_and_nothing_else() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node)
        async with running(source, sink):
            await subscribed(node, source)
            assert sink.states == [SourceState.CONNECTING, UP]
            assert node.sent(b"SUBSCRIBE") == [CHANNEL.encode()]
            assert node.count(b"AUTH") == 0  # no password in the URL: no AUTH
            for i in range(100):
                node.publish(CHANNEL, b"q%d" % i)
            node.publish("other.channel", b"not ours")
            await eventually(lambda: len(sink.messages) == 100, what="100 messages")
            assert sink.messages == [b"q%d" % i for i in range(100)]
            assert source.reconnects == 0


async def test_the_url_credentials_are_sent_with_auth() -> None:
    async with FakeShardNode() as node:
        source = source_on(node, url=f"redis://reader:s3cret@127.0.0.1:{node.port}/0")
        async with running(source, Sink()):
            await subscribed(node, source)
            auth = [cmd for cmd in node.commands if cmd[0] == b"AUTH"]
            assert auth == [[b"AUTH", b"reader", b"s3cret"]]


async def test_a_burst_past_the_budget_is_handed_over_in_rounds_whole_and_in_order() -> None:
    sink = Sink(room=7)
    async with FakeShardNode() as node:
        source = source_on(node)
        async with running(source, sink):
            await subscribed(node, source)
            rooms = sink.rooms
            for i in range(500):
                node.publish(CHANNEL, b"q%d" % i)
            await eventually(lambda: len(sink.messages) == 500, what="500 messages")
            assert sink.messages == [b"q%d" % i for i in range(500)]
            assert sink.rooms - rooms >= 500 // 7  # never more than 7 per hand-over


@pytest.mark.parametrize("failure", ["reset", "unsubscribed", "not RESP"])
async def test_a_lost_subscription_within_grace_is_subscribed_again(failure: str) -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node, grace_period=30.0)
        async with running(source, sink):
            await subscribed(node, source)
            if failure == "reset":
                node.drop()
            elif failure == "unsubscribed":
                node.unsubscribe(CHANNEL)
            else:
                node.garbage(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await subscribed(node, source, connections=2)
            assert sink.states == [SourceState.CONNECTING, UP, SourceState.RECONNECTING, UP]
            assert source.reconnects == 1
            node.publish(CHANNEL, b"after")
            await eventually(lambda: sink.messages == [b"after"], what="the next message")


async def test_a_node_that_stops_answering_pings_is_left() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node, grace_period=30.0, ping_interval=0.2, pong_timeout=0.2)
        async with running(source, sink):
            await subscribed(node, source)
            await eventually(lambda: node.count(b"PING") >= 1, what="a PING while quiet")
            assert source.state is UP  # a quiet channel answered by PONGs stays up
            node.mute()
            await eventually(
                lambda: SourceState.RECONNECTING in sink.states, what="the silence noticed"
            )
            await eventually(lambda: node.connections >= 2, what="a new connection tried")


async def test_down_past_the_grace_period_and_up_again_when_redis_returns() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node, grace_period=0.3)
        async with running(source, sink):
            await subscribed(node, source)
            await node.stop()
            await eventually(lambda: source.state is DOWN, what="down after the grace period")
            assert sink.states == [SourceState.CONNECTING, UP, SourceState.RECONNECTING, DOWN]
            await node.restart()
            await eventually(lambda: source.state is UP, what="up again")
            assert CHANNEL in node.subscribed()
            assert source.reconnects == 1


async def test_redis_absent_at_start_up_goes_down_after_the_grace_period() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        await node.stop()
        source = source_on(node, grace_period=0.3)
        async with running(source, sink):
            await eventually(lambda: source.state is DOWN, what="down")
            assert sink.states == [SourceState.CONNECTING, DOWN]
            await node.restart()
            await eventually(lambda: source.state is UP, what="up once Redis listens")
            assert CHANNEL in node.subscribed()
