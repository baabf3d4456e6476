"""
The write-round scheduler alone: fake connections that record their turns, the real
pacer and metrics. One round per loop turn whatever the number of quotes, a broken
connection closed without starving the others, and the budget a bulk-reading source
is told.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from quotes_core import DEFAULT_FLUSH_BUDGET, INTERNAL_ERROR_REASON, CloseCode, Subscription
from quotes_server.connection import Connection
from quotes_server.metrics import Metrics
from quotes_server.rounds import WriteRounds

pytestmark = pytest.mark.anyio


class FakeConnection:
    """Records each write turn; ``broken`` makes its write raise."""

    def __init__(self, name: str, broken: bool = False) -> None:
        self.client_id = name
        self.broken = broken
        self.turns = 0
        self.closed: tuple[int, str] | None = None

    def on_ready(self) -> None:
        self.turns += 1
        if self.broken:
            raise RuntimeError("a bug in one connection")

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Harness:
    def __init__(self, window: float = 0.0) -> None:
        self.connections: dict[Subscription[Any], Connection] = {}
        self.metrics = Metrics()
        self.rounds = WriteRounds(window, self.connections, self.metrics)

    def add(self, conn: FakeConnection) -> Subscription[Any]:
        sub = cast(Subscription[Any], object())
        self.connections[sub] = cast(Connection, conn)
        return sub


async def next_turns(n: int = 2) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_many_quotes_in_one_loop_turn_make_one_round() -> None:
    h = Harness()
    a, b = FakeConnection("a"), FakeConnection("b")
    sub_a, sub_b = h.add(a), h.add(b)
    h.rounds.published([sub_a])
    h.rounds.published([sub_b])
    h.rounds.published([])  # a quote that woke nobody new (both already pending)
    assert (a.turns, b.turns) == (0, 0)  # nothing is written in the reading loop
    await next_turns()
    assert (a.turns, b.turns) == (1, 1)
    assert h.metrics.hot.flushes == 1
    h.rounds.published([sub_a])
    await next_turns()
    assert (a.turns, b.turns) == (2, 1)
    assert h.metrics.hot.flushes == 2


async def test_a_broken_connection_is_closed_and_the_others_still_write() -> None:
    h = Harness()
    broken, fine = FakeConnection("x", broken=True), FakeConnection("y")
    h.rounds.published([h.add(broken), h.add(fine)])
    await next_turns()
    assert broken.closed == (CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
    assert fine.turns == 1
    assert fine.closed is None


async def test_a_connection_gone_before_its_round_is_skipped() -> None:
    h = Harness()
    gone = FakeConnection("gone")
    sub = h.add(gone)
    h.rounds.published([sub])
    del h.connections[sub]
    await next_turns()
    assert gone.turns == 0
    assert h.metrics.hot.flushes == 1


async def test_the_room_is_the_budget_less_what_arrived_since_the_last_round() -> None:
    h = Harness()
    conn = FakeConnection("a")
    sub = h.add(conn)
    assert h.rounds.room() == DEFAULT_FLUSH_BUDGET  # no round pending: the whole budget
    h.rounds.published([sub])
    for _ in range(10):
        h.rounds.arrived()
    assert h.rounds.room() == DEFAULT_FLUSH_BUDGET - 10
    for _ in range(DEFAULT_FLUSH_BUDGET):
        h.rounds.arrived()
    assert h.rounds.room() == 0  # spent: the source waits for the round
    await next_turns()
    assert conn.turns == 1
    assert h.rounds.room() == DEFAULT_FLUSH_BUDGET


async def test_each_round_observes_the_newest_quotes_latency() -> None:
    h = Harness()
    h.rounds.newest = datetime.now(UTC)
    h.rounds.published([h.add(FakeConnection("a"))])
    await next_turns()
    samples = h.metrics.registry.get_sample_value("quotes_delivery_latency_seconds_count")
    assert samples == 1.0


async def test_a_held_round_counts_each_quote_once() -> None:
    """A quote published again with its deployment position (``arrival=False``) does
    not count against a held round's budget a second time."""
    h = Harness(window=10.0)
    conn = FakeConnection("a")
    sub = h.add(conn)
    now = time.monotonic()
    h.rounds._pacer.finished(now - 10.0, now)  # the last round was long: the next is held
    h.rounds.published([sub])
    for _ in range(DEFAULT_FLUSH_BUDGET - 1):
        h.rounds.published([])  # an upstream quote, as it comes
        h.rounds.published([], arrival=False)  # the same quote with its position
    await next_turns()
    assert conn.turns == 0  # held: one quote short of the budget
    h.rounds.published([])
    await next_turns()
    assert conn.turns == 1  # the budget is spent: released at once
