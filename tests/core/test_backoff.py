"""Reconnect delays."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import Backoff, backoff


def test_default_schedule() -> None:
    """Without jitter: 1, 2, 4, 8, ... capped at 60 seconds."""
    assert list(itertools.islice(backoff(), 9)) == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@given(
    st.floats(0.01, 10),
    st.floats(1, 4),
    st.floats(10, 120),
    st.integers(1, 60),
)
def test_base_schedule_is_monotone_and_capped(
    initial: float, factor: float, cap: float, n: int
) -> None:
    """The base schedule never decreases and never exceeds the cap."""
    delays = list(itertools.islice(backoff(initial, factor, cap), n))
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert all(d <= cap for d in delays)
    assert delays[0] == initial


@given(st.floats(0, 1), st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=30))
def test_jitter_only_shortens(jitter: float, draws: list[float]) -> None:
    """Jittered delays lie in [d*(1-jitter), d] of the base schedule, so the cap holds."""
    rnd = iter(draws)
    jittered = itertools.islice(backoff(jitter=jitter, random_source=lambda: next(rnd)), len(draws))
    for got, base in zip(jittered, backoff(), strict=False):
        assert base * (1 - jitter) - 1e-9 <= got <= base <= 60


def test_resettable_backoff() -> None:
    """Backoff.reset() starts again from the initial delay."""
    b = Backoff(jitter=0)
    assert [b.next_delay() for _ in range(4)] == [1, 2, 4, 8]
    assert b.attempts == 4
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == 1


def test_injected_random_source_makes_jitter_deterministic() -> None:
    """With a fixed random source the jittered schedule is exactly predictable."""
    b = Backoff(jitter=0.5, random_source=lambda: 1.0)
    assert [b.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"factor": 0.5}, {"initial": 10, "max_delay": 5}, {"jitter": 1.5}],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    """Nonsense parameters fail loudly instead of producing a broken schedule."""
    with pytest.raises(ValueError):
        next(backoff(**kwargs))
    with pytest.raises(ValueError):
        Backoff(**kwargs)
