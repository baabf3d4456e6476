"""answer(): what every server does with one client message, decided once in the core."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from quotes_core import Snapshot, StreamItem, TickerFilter, answer

NOW = datetime(2026, 2, 12, 10, 30, 0, 123456, tzinfo=UTC)
AAPL_MSFT = TickerFilter.of(["AAPL", "MSFT"])


def _snapshot(*tickers: str) -> Snapshot[str]:
    snap: Snapshot[str] = Snapshot()
    for seq, t in enumerate(tickers, 1):
        snap.update(StreamItem(seq, "e1", t, f'{{"ticker":"{t}"}}', 0.0))
    return snap


def test_ping_is_answered_with_its_id_and_changes_nothing() -> None:
    """A ping gets a pong with its id and the given clock; the filter stays."""
    reply = answer('{"action":"ping","id":7}', AAPL_MSFT, now=NOW)
    assert reply is not None
    assert reply.event == '{"event":"pong","id":7,"server_time":"2026-02-12T10:30:00.123456Z"}'
    assert (reply.filter, reply.snapshot, reply.error) == (None, [], None)


def test_subscribe_returns_the_new_filter_and_the_new_tickers_snapshot() -> None:
    """subscribe: the whole filter in the event; the snapshot of added tickers only."""
    snap = _snapshot("AAPL", "TSLA", "GOOG")
    reply = answer(
        '{"action":"subscribe","tickers":["tsla","GOOG","NONE"]}', AAPL_MSFT, now=NOW, snapshot=snap
    )
    assert reply is not None
    assert json.loads(reply.event) == {
        "event": "subscribed",
        "tickers": ["AAPL", "GOOG", "MSFT", "NONE", "TSLA"],
    }
    assert reply.filter == TickerFilter.of(["AAPL", "MSFT", "TSLA", "GOOG", "NONE"])
    assert [i.ticker for i in reply.snapshot] == ["TSLA", "GOOG"]  # publication order


def test_set_all_snapshots_only_tickers_not_followed_before() -> None:
    """set * from AAPL,MSFT: the snapshot of every other ticker; from * itself: none."""
    snap = _snapshot("AAPL", "TSLA", "MSFT", "GOOG")
    reply = answer('{"action":"set","tickers":["*"]}', AAPL_MSFT, now=NOW, snapshot=snap)
    assert reply is not None
    assert reply.filter == TickerFilter()
    assert [i.ticker for i in reply.snapshot] == ["TSLA", "GOOG"]
    again = answer('{"action":"set","tickers":["*"]}', TickerFilter(), now=NOW, snapshot=snap)
    assert again is not None
    assert again.snapshot == []


def test_errors_are_replies_with_the_error() -> None:
    """Bad messages get an error frame with the machine-readable code; no filter change."""
    for text, code in (
        ("nope", "invalid_json"),
        ('{"action":"dance"}', "unknown_action"),
        ('{"action":"unsubscribe","tickers":["AAPL"]}', "invalid_message"),
    ):
        reply = answer(text, TickerFilter(), now=NOW)
        assert reply is not None
        assert reply.error is not None
        assert reply.error.code == code
        assert json.loads(reply.event)["code"] == code
        assert reply.filter is None


@given(
    grant=st.frozensets(st.sampled_from(["AAPL", "MSFT", "TSLA"]), max_size=3),
    asked=st.lists(st.sampled_from(["AAPL", "MSFT", "TSLA", "GOOG", "*"]), min_size=1),
    kind=st.sampled_from(["subscribe", "set"]),
)
def test_a_grant_is_never_exceeded(grant: frozenset[str], asked: list[str], kind: str) -> None:
    """Whatever a client asks, its new filter stays inside its grant, or it gets forbidden."""
    text = json.dumps({"action": kind, "tickers": asked})
    reply = answer(text, TickerFilter(frozenset()), now=NOW, grant=grant)
    assert reply is not None
    if reply.filter is None:
        assert reply.error is not None
        assert reply.error.code == "forbidden"
    else:
        assert reply.filter.tickers is not None
        assert reply.filter.tickers <= grant


def test_charge_weighs_big_actions_and_can_refuse_them() -> None:
    """The charge gets the action's cost less one; a refusal means no reply at all."""
    charged: list[int] = []

    def charge(weight: int) -> bool:
        charged.append(weight)
        return False

    big = json.dumps({"action": "set", "tickers": [f"T{i}" for i in range(100)]})
    assert answer(big, TickerFilter(), now=NOW, charge=charge) is None
    assert charged == [2]
    assert answer('{"action":"ping"}', TickerFilter(), now=NOW, charge=charge) is not None
    assert charged == [2]  # a one-frame action is not charged again
