"""Latency statistics and the rate-limited log."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_client import QuotesClient
from quotes_client.ratelimit import RateLimitedLog
from quotes_client.stats import ClientState, ClientStats, Latency, LatencyStats
from quotes_client.testing import ScriptedServer
from quotes_core.testing import make_quote
from tests.client.servers import FakeClock, take


def test_percentiles_use_nearest_rank() -> None:
    """p50/p99/max of 1..100 ms are 50, 99 and 100 ms."""
    stats = LatencyStats()
    for ms in range(100, 0, -1):
        stats.add(ms / 1000)
    snap = stats.snapshot()
    assert snap.count == 100
    assert snap.p50 == 0.050
    assert snap.p99 == 0.099
    assert snap.max == 0.100


def test_empty_stats_have_no_percentiles() -> None:
    """Before any sample, the summary has count 0 and no values."""
    snap = LatencyStats().snapshot()
    assert (snap.count, snap.p50, snap.p99, snap.max) == (0, None, None, None)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=200), st.integers(1, 50))
def test_window_bounds_memory_but_count_and_max_cover_everything(
    samples: list[float], window: int
) -> None:
    """Percentiles come from the last ``window`` samples; count and max from all."""
    stats = LatencyStats(window)
    for s in samples:
        stats.add(s)
    snap = stats.snapshot()
    recent = samples[-window:]
    assert snap.count == len(samples)
    assert snap.max == max(samples)
    assert snap.p50 is not None
    assert snap.p99 is not None
    assert min(recent) <= snap.p50 <= snap.p99 <= max(recent)
    assert snap.p50 in recent


def test_rate_limited_log_summarises_repeats(caplog: pytest.LogCaptureFixture) -> None:
    """One line per interval; the next line says how many were suppressed."""
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("quotes_client.test"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="quotes_client.test"):
        assert log.warning("bad %s", 1)
        assert not log.warning("bad %s", 2)
        assert not log.warning("bad %s", 3)
        clock.advance(10)
        assert log.warning("bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "bad 4 (2 similar messages suppressed)",
    ]


def test_a_stats_snapshot_summarises_latency_only_when_read_and_once() -> None:
    """Reading counters never sorts the latency window; the first latency read does, once."""
    window = LatencyStats()
    for ms in (30, 10, 20):
        window.add(ms / 1000)
    calls = 0

    def summarize() -> Latency:
        nonlocal calls
        calls += 1
        return window.snapshot()

    snap = ClientStats(ClientState.CONNECTED, 3, 0, 0, 0, 1, 0, 1, summarize=summarize)
    assert (snap.received, snap.connects, snap.state) == (3, 1, ClientState.CONNECTED)
    assert calls == 0
    assert snap.latency.p50 == 0.020
    assert snap.latency.max == 0.030
    assert calls == 1


@pytest.mark.anyio
async def test_the_clients_stats_latency_is_its_latency() -> None:
    """client.stats.latency is the same summary as client.latency."""
    async with ScriptedServer() as server, QuotesClient(server.url) as client:
        await server.wait_connections(1)
        server.publish(*(make_quote("AAPL", n) for n in range(5)))
        await take(client, 5)
        stats = client.stats
        assert stats.received == 5
        assert stats.latency == client.latency
        assert stats.latency.count == 5
