"""
The sharded source, in this process: ``ShardedRedisSource`` against fake masters on
loopback sockets (:mod:`tests.helpers.fake_redis`) and a recording sink in place of
the runtime. Interest to subscriptions, per-shard health with its grace period, and
the source's state, without a Redis Cluster; the real cluster is tried in
``tests/e2e/test_cluster.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from quotes_core import ShardMap, TickerFilter
from quotes_server.sources import SourceState
from quotes_server.sources.sharded import ShardedRedisSource
from tests.helpers.fake_redis import FakeShardNode
from tests.helpers.processes import eventually

pytestmark = pytest.mark.anyio

SHARDS = 4
MAP = ShardMap("quotes.realtime", SHARDS)
HALF = sorted(MAP.slots)[1]  # node A owns slots 0..HALF (two shards), node B the rest


class Sink:
    """A recording stand-in for the runtime."""

    def __init__(self, clients: list[TickerFilter] | None = None) -> None:
        self.messages: list[bytes] = []
        self.states: list[SourceState] = []
        self.clients = clients or []
        self.closed: list[TickerFilter] = []

    def on_message(self, raw: bytes) -> None:
        self.messages.append(raw)

    def on_state(self, state: SourceState) -> None:
        self.states.append(state)

    def room(self) -> int:
        return 1000

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        self.closed += [f for f in self.clients if affected(f)]


@contextlib.asynccontextmanager
async def running(source: ShardedRedisSource, sink: Sink) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(source.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def source_on(node: FakeShardNode, **options: float) -> ShardedRedisSource:
    settings = {"grace_period": 0.3, "timeout": 2.0, "ping_interval": 30.0, **options}
    return ShardedRedisSource(f"redis://127.0.0.1:{node.port}", shards=SHARDS, **settings)


def ticker_on(shard: int) -> str:
    return next(t for t in (f"T{i}" for i in range(1000)) if MAP.shard(t) == shard)


async def test_a_single_redis_serves_the_shards_clients_want() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node)
        async with running(source, sink):
            await eventually(lambda: source.cluster is False, what="seen as a single Redis")
            # before its link is up, every shard is down (never up) and is not waited for
            await eventually(lambda: source.state is SourceState.UP, what="the link up")
            aapl = TickerFilter.parse("AAPL")
            source.set_interest(False, aapl.tickers)
            assert await source.wait_subscribed(aapl, 5.0)
            channel = MAP.channels[MAP.shard("AAPL")]
            assert node.subscribed() == {channel}
            assert source.state is SourceState.UP
            node.publish(channel, b"one")
            await eventually(lambda: sink.messages == [b"one"], what="the message")
            source.set_interest(True, frozenset())
            await eventually(lambda: node.subscribed() == set(MAP.channels), what="every shard")
    assert sink.states[0] is SourceState.CONNECTING
    assert SourceState.UP in sink.states


async def test_interest_that_goes_away_unsubscribes() -> None:
    sink = Sink()
    async with FakeShardNode() as node:
        source = source_on(node)
        async with running(source, sink):
            source.set_interest(True, frozenset())
            await eventually(lambda: node.subscribed() == set(MAP.channels), what="every shard")
            source.set_interest(False, frozenset({ticker_on(2)}))
            await eventually(lambda: node.subscribed() == {MAP.channels[2]}, what="one shard left")
            assert source.subscribed_shards == frozenset({2})


async def test_a_cluster_master_lost_past_grace_closes_only_its_clients() -> None:
    on_a = [s for s in range(SHARDS) if MAP.slots[s] <= HALF]
    on_b = [s for s in range(SHARDS) if MAP.slots[s] > HALF]
    assert len(on_a) == len(on_b) == 2
    a_client = TickerFilter.parse(ticker_on(on_a[0]))
    b_client = TickerFilter.parse(ticker_on(on_b[0]))
    sink = Sink([a_client, b_client])
    async with FakeShardNode() as a, FakeShardNode() as b:
        slots = [[0, HALF, [b"127.0.0.1", a.port, b"a" * 40]]]
        slots.append([HALF + 1, 16383, [b"127.0.0.1", b.port, b"b" * 40]])
        a.slots = b.slots = slots
        source = source_on(a)
        async with running(source, sink):
            source.set_interest(True, frozenset())
            await eventually(lambda: source.state is SourceState.UP, what="every shard up")
            # up is every link up; the subscriptions are confirmed after
            want_a, want_b = {MAP.channels[s] for s in on_a}, {MAP.channels[s] for s in on_b}
            await eventually(lambda: a.subscribed() == want_a, what="a's shards subscribed")
            await eventually(lambda: b.subscribed() == want_b, what="b's shards subscribed")
            await b.stop()
            await eventually(lambda: bool(sink.closed), what="the grace period over")
            assert sink.closed == [b_client]  # a's clients keep streaming
            assert source.down_shards == frozenset(on_b)
            assert source.state is SourceState.RECONNECTING
            assert not source.accepts(b_client)
            assert source.accepts(a_client)
            await b.restart()
            await eventually(lambda: source.state is SourceState.UP, what="b back")
            assert source.down_shards == frozenset()
            await eventually(lambda: b.subscribed() == want_b, what="b's shards again")
    assert source.reconnects >= 1


async def test_a_moved_subscription_follows_the_new_owner() -> None:
    sink = Sink()
    async with FakeShardNode() as a, FakeShardNode() as b:
        slot = MAP.slots[1]
        a.slots = [[0, 16383, [b"127.0.0.1", a.port, b"a" * 40]]]
        # then the slot of shard 1 migrates to b: a answers MOVED, both tell the new layout
        b.slots = [
            [0, slot - 1, [b"127.0.0.1", a.port, b"a" * 40]],
            [slot, slot, [b"127.0.0.1", b.port, b"b" * 40]],
            [slot + 1, 16383, [b"127.0.0.1", a.port, b"a" * 40]],
        ]
        channel = MAP.channels[1]
        a.refuse(channel, b"MOVED %d 127.0.0.1:%d" % (slot, b.port), slots_after=b.slots)
        source = source_on(a)
        async with running(source, sink):
            source.set_interest(False, frozenset({ticker_on(1)}))
            await eventually(lambda: b.subscribed() == {channel}, what="subscribed on b")
            assert a.sent(b"SSUBSCRIBE") == [channel.encode()]
            b.publish(channel, b"via b")
            await eventually(lambda: sink.messages == [b"via b"], what="the message via b")
