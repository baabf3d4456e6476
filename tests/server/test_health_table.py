"""The upstream health table alone: every transition, the source state, the grace period."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_server.sources import SourceState
from quotes_server.sources.health import TRANSITIONS, Event, HealthTable, PartState


def test_the_table_covers_every_state_and_event() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in PartState for e in Event}
    # only a lost part can run out of grace; only health brings a part up
    assert [k for k, v in TRANSITIONS.items() if v is PartState.DOWN and k[0] is not v] == [
        (PartState.LOST, Event.GRACE_OVER)
    ]
    into_up = {k[1] for k, v in TRANSITIONS.items() if v is PartState.UP and k[0] is not v}
    assert into_up == {Event.HEALTHY}


def test_start_up_then_loss_then_grace_then_back() -> None:
    table = HealthTable(3, grace_period=5.0)
    assert table.source_state() is SourceState.CONNECTING
    assert table.down == {0, 1, 2}
    table.ever_up = True
    table.observe({0, 1}, now=1.0)
    assert table.source_state() is SourceState.CONNECTING  # shard 2 was never up
    table.observe({0, 1, 2}, now=2.0)
    assert table.source_state() is SourceState.UP
    assert table.settled
    table.observe({0, 2}, now=10.0)
    assert table[1] is PartState.LOST
    assert table.lost == {1: 10.0}
    assert table.source_state() is SourceState.RECONNECTING
    assert table.next_deadline() == 15.0
    table.observe({0, 2}, now=12.0)  # still lost: the grace counts from the first loss
    assert table.expire(14.9) == frozenset()
    assert table.expire(15.0) == {1}
    assert table.down == {1}
    assert table.next_deadline() is None
    assert table.source_state() is SourceState.RECONNECTING
    table.observe(set(), now=20.0)
    assert table.lost == {0: 20.0, 2: 20.0}  # the down shard is not lost again
    table.expire(25.0)
    assert table.source_state() is SourceState.DOWN
    table.observe({0, 1, 2}, now=30.0)
    assert table.source_state() is SourceState.UP
    assert table.down == frozenset()


def test_a_failed_start_is_down_at_once_and_a_never_tried_one_is_connecting() -> None:
    table = HealthTable(1, grace_period=5.0)
    table.observe(set(), now=0.0)
    assert table.source_state() is SourceState.CONNECTING
    table.failed = True
    assert table.source_state() is SourceState.DOWN


def test_a_recovered_part_ends_its_grace() -> None:
    table = HealthTable(1, grace_period=5.0)
    table.observe({0}, now=0.0)
    table.observe(set(), now=1.0)
    table.observe({0}, now=2.0)
    assert table.expire(100.0) == frozenset()
    assert table.source_state() is SourceState.UP


def test_parts_must_exist() -> None:
    with pytest.raises(ValueError, match="parts"):
        HealthTable(0, 1.0)


@given(
    st.lists(
        st.tuples(st.frozensets(st.integers(0, 3)), st.floats(0, 3), st.booleans()), max_size=30
    )
)
def test_invariants_hold_for_any_history(steps: list[tuple[frozenset[int], float, bool]]) -> None:
    """Down and lost never overlap; a lost part's deadline is its loss plus the grace."""
    table = HealthTable(4, grace_period=2.0)
    now = 0.0
    for healthy, gap, expire in steps:
        now += gap
        if expire:
            table.expire(now)
        else:
            table.observe(healthy, now)
            assert {p for p in range(4) if table[p] is PartState.UP} == healthy
        assert not (table.down & set(table.lost))
        assert all(table[p] is PartState.LOST for p in table.lost)
        deadline = table.next_deadline()
        assert deadline == (min(table.lost.values()) + 2.0 if table.lost else None)
        assert table.settled is (table.source_state() is SourceState.UP)
