"""
One shard link, in this process: the link against a fake master on a loopback
socket (:mod:`tests.helpers.fake_redis`) and a recording owner in place of the
sharded source. What the sharded source relies on: one ``SSUBSCRIBE`` per wanted
channel, messages delivered only from confirmed channels and in order, leaving and
moved channels reported, a lost or silent node reconnected with every wanted
channel subscribed again. The real cluster is tried in ``tests/e2e/test_cluster.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import MovedError, ResponseError

from quotes_server.sources.shard_link import ShardLink
from tests.helpers.fake_redis import FakeShardNode
from tests.helpers.processes import eventually

pytestmark = pytest.mark.anyio


class Owner:
    """A recording stand-in for the sharded source (the link's ``LinkOwner``)."""

    grace_period = 1.0
    timeout = 5.0
    ping_interval = 30.0
    pong_timeout = 5.0
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.changes: list[tuple[bool, BaseException | None]] = []
        self.moved: list[tuple[str, ResponseError | None]] = []
        self.subscribed_changes = 0

    def deliver(self, data: bytes) -> None:
        self.delivered.append(data)

    def room(self) -> int:
        return 1000

    def link_changed(self, link: ShardLink, exc: BaseException | None) -> None:
        self.changes.append((link.up, exc))

    def channel_moved(self, link: ShardLink, channel: str, exc: ResponseError | None) -> None:
        self.moved.append((channel, exc))

    def subscribed_changed(self) -> None:
        self.subscribed_changes += 1


@contextlib.asynccontextmanager
async def running(link: ShardLink) -> AsyncIterator[ShardLink]:
    task = asyncio.get_running_loop().create_task(link.run())
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wanted_channels_are_subscribed_and_only_confirmed_ones_deliver() -> None:
    owner = Owner()
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}", "q{1}"}))
        async with running(link):
            await eventually(lambda: link.confirmed == {"q{0}", "q{1}"}, what="both confirmed")
            assert sorted(node.sent(b"SSUBSCRIBE")) == [b"q{0}", b"q{1}"]  # one command each
            assert link.up
            assert owner.changes == [(True, None)]
            for i in range(5):
                node.publish("q{0}", b"a%d" % i)
                node.publish("q{1}", b"b%d" % i)
            await eventually(lambda: len(owner.delivered) == 10, what="ten messages")
    assert [m for m in owner.delivered if m.startswith(b"a")] == [b"a%d" % i for i in range(5)]
    assert [m for m in owner.delivered if m.startswith(b"b")] == [b"b%d" % i for i in range(5)]


async def test_a_channel_no_longer_wanted_is_left_and_its_messages_stop() -> None:
    owner = Owner()
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}", "q{1}"}))
        async with running(link):
            await eventually(lambda: len(link.confirmed) == 2, what="both confirmed")
            link.set_wanted(frozenset({"q{1}"}))
            await eventually(lambda: link.confirmed == {"q{1}"}, what="q{0} left")
            assert node.sent(b"SUNSUBSCRIBE") == [b"q{0}"]
            assert node.subscribed() == {"q{1}"}
            assert node.publish("q{0}", b"gone") == 0
            node.publish("q{1}", b"kept")
            await eventually(lambda: owner.delivered == [b"kept"], what="the kept channel")
            assert owner.moved == []  # a leave we asked for is not a move


async def test_a_moved_reply_is_reported_with_the_new_owner() -> None:
    owner = Owner()
    async with FakeShardNode() as node:
        node.refuse("q{2}", b"MOVED 7 10.0.0.9:7002")
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{1}", "q{2}"}))
        async with running(link):
            await eventually(lambda: bool(owner.moved), what="the refusal reported")
            await eventually(lambda: link.confirmed == {"q{1}"}, what="the other confirmed")
    ((channel, exc),) = owner.moved
    assert channel == "q{2}"
    assert isinstance(exc, MovedError)
    assert (exc.host, exc.port) == ("10.0.0.9", 7002)


async def test_a_migrated_slot_is_reported_as_moved_without_an_error() -> None:
    owner = Owner()
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{3}"}))
        async with running(link):
            await eventually(lambda: link.confirmed == {"q{3}"}, what="confirmed")
            node.migrate("q{3}")
            await eventually(lambda: owner.moved == [("q{3}", None)], what="the move reported")
            assert link.confirmed == set()


async def test_a_lost_node_is_reconnected_with_every_wanted_channel() -> None:
    owner = Owner()
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}", "q{1}"}))
        async with running(link):
            await eventually(lambda: len(link.confirmed) == 2, what="both confirmed")
            node.drop()
            await eventually(lambda: node.connections == 2, what="a second connection")
            await eventually(lambda: len(link.confirmed) == 2, what="both confirmed again")
            node.publish("q{0}", b"after")
            await eventually(lambda: owner.delivered == [b"after"], what="delivery resumed")
    assert link.connects == 2
    assert [up for up, _ in owner.changes] == [True, False, True]
    assert owner.changes[1][1] is not None  # the loss, with its cause
    assert sorted(node.sent(b"SSUBSCRIBE")) == [b"q{0}", b"q{0}", b"q{1}", b"q{1}"]


async def test_a_silent_node_fails_the_pong_deadline_and_is_reconnected() -> None:
    owner = Owner()
    owner.ping_interval = 0.05
    owner.pong_timeout = 0.2
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}"}))
        async with running(link):
            await eventually(lambda: link.confirmed == {"q{0}"}, what="confirmed")
            await eventually(lambda: node.count(b"PING") >= 2, what="a keepalive PING")
            node.mute()
            await eventually(lambda: len(owner.changes) >= 2, what="the link declared lost")
            assert owner.changes[1][0] is False
            assert "PONG" in str(owner.changes[1][1])
            assert not link.up


async def test_a_password_is_sent_with_auth_before_anything_else() -> None:
    owner = Owner()
    owner.username, owner.password = "quotes", "s3cret"
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}"}))
        async with running(link):
            await eventually(lambda: link.confirmed == {"q{0}"}, what="confirmed")
    assert node.commands[0] == [b"AUTH", b"quotes", b"s3cret"]
    assert node.commands[1] == [b"PING"]


async def test_a_burst_is_handed_over_a_budget_at_a_time_and_nothing_is_lost() -> None:
    class Tight(Owner):
        def room(self) -> int:
            return 3  # the runtime's round takes 3 before it runs

    owner = Tight()
    async with FakeShardNode() as node:
        link = ShardLink(owner, node.address)
        link.set_wanted(frozenset({"q{0}"}))
        async with running(link):
            await eventually(lambda: link.confirmed == {"q{0}"}, what="confirmed")
            for i in range(50):
                node.publish("q{0}", b"%d" % i)
            await eventually(lambda: len(owner.delivered) == 50, what="all fifty")
    assert owner.delivered == [b"%d" % i for i in range(50)]
