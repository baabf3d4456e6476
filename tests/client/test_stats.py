"""Latency statistics and the rate-limited log."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_client.ratelimit import RateLimitedLog
from quotes_client.stats import LatencyStats
from tests.client.servers import FakeClock


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
