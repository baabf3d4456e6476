"""The write-round pacer: never holds an idle server, holds a busy one at most ``window``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import FlushPacer

times = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
costs = st.floats(min_value=0, max_value=1.0, allow_nan=False, allow_infinity=False)
windows = st.floats(min_value=0, max_value=0.1, allow_nan=False, allow_infinity=False)


def test_a_fresh_pacer_never_holds() -> None:
    assert FlushPacer(0.005).delay(0.0) == 0.0


@given(windows, times, costs, st.floats(min_value=0, max_value=2.0))
def test_the_hold_is_bounded_by_the_window_and_by_the_last_rounds_cost(
    window: float, start: float, cost: float, since_end: float
) -> None:
    pacer = FlushPacer(window)
    end = start + cost
    took = end - start  # the round's duration as the pacer sees it (float rounding)
    pacer.finished(start, end)
    delay = pacer.delay(end + since_end)
    assert 0.0 <= delay <= window
    assert delay <= took
    # the next round never starts before the hold is over, nor later than it needs to
    assert delay == pytest.approx(max(0.0, min(window, took) - since_end), abs=1e-9)


@given(times, costs, st.floats(min_value=0, max_value=2.0))
def test_no_window_never_holds(start: float, cost: float, since_end: float) -> None:
    pacer = FlushPacer(0.0)
    pacer.finished(start, start + cost)
    assert pacer.delay(start + cost + since_end) == 0.0
    assert not pacer.holding


@given(windows, times, costs)
def test_an_idle_server_never_waits(window: float, start: float, cost: float) -> None:
    """Idle for at least as long as the last round took: the next round is not held."""
    pacer = FlushPacer(window)
    pacer.finished(start, start + cost)
    assert pacer.delay(start + 2 * cost + 1e-6) == 0.0


@given(st.integers(min_value=1, max_value=500))
def test_a_held_round_is_released_by_the_budget(budget: int) -> None:
    pacer = FlushPacer(0.005, budget=budget)
    pacer.finished(0.0, 0.004)  # an expensive round just ended
    assert pacer.delay(0.004) > 0.0
    assert pacer.holding
    released = [pacer.arrived() for _ in range(budget)]
    assert released == [False] * (budget - 1) + [True]
    assert not pacer.holding
    assert not pacer.arrived()  # nothing held: counting stops


def test_items_are_not_counted_against_a_round_that_is_not_held() -> None:
    pacer = FlushPacer(0.005, budget=1)
    assert pacer.delay(0.0) == 0.0
    assert not pacer.arrived()


def test_a_started_round_ends_the_hold() -> None:
    pacer = FlushPacer(0.005, budget=10)
    pacer.finished(0.0, 0.002)
    assert pacer.delay(0.002) > 0.0
    pacer.started()
    assert not pacer.holding
    assert not pacer.arrived()


@pytest.mark.parametrize(("window", "budget"), [(-0.001, 1), (0.005, 0)])
def test_bad_arguments_are_refused(window: float, budget: int) -> None:
    with pytest.raises(ValueError, match=r"window|budget"):
        FlushPacer(window, budget)
