"""The token bucket never lets more through than its rate and burst allow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core.bucket import TokenBucket


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=500),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=300),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Over any run, events allowed <= burst + rate * elapsed time."""
    now = 0.0
    bucket = TokenBucket(rate, burst, now)
    allowed = 0
    for gap in gaps:
        now += gap
        allowed += bucket.take(now)
        assert allowed <= burst + rate * now + 1e-6


def test_full_bucket_allows_a_burst_then_refills() -> None:
    """A fresh bucket allows ``burst`` events at once, then one per 1/rate seconds."""
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert [bucket.take(100) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_rejects_nonsense(rate: float, burst: int) -> None:
    """A bucket that could never allow anything is a programming error."""
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0)


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=500),
    events=st.lists(
        st.tuples(st.floats(min_value=0, max_value=2), st.integers(min_value=1, max_value=50)),
        max_size=300,
    ),
)
def test_weighted_events_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: int, events: list[tuple[float, int]]
) -> None:
    """Weighted takes: the total weight allowed <= burst + rate * elapsed time."""
    now = 0.0
    bucket = TokenBucket(rate, burst, now)
    allowed = 0
    for gap, weight in events:
        now += gap
        before = bucket.tokens
        if bucket.take(now, weight):
            allowed += weight
        else:
            assert bucket.tokens >= before  # a refused event takes nothing
        assert allowed <= burst + rate * now + 1e-6


def test_an_event_heavier_than_the_burst_is_never_allowed() -> None:
    """A weight over the burst fails even on a full bucket; a fitting one then passes."""
    bucket = TokenBucket(10, 20, 0.0)
    assert not bucket.take(0.0, 21)
    assert bucket.take(0.0, 20)
    assert not bucket.take(0.0, 1)
