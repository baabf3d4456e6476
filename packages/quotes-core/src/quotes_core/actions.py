"""
Client actions (text messages a client may send) and the server's control frames.

A client may send JSON objects with an ``"action"`` key::

    {"action": "subscribe", "tickers": ["AAPL", "msft"]}    add tickers
    {"action": "unsubscribe", "tickers": ["AAPL"]}          remove tickers
    {"action": "set", "tickers": ["*"]}                     replace the filter
    {"action": "ping", "id": 7}                             ask for the server's clock

The server answers with *control frames*: JSON objects with an ``"event"`` key and
never a ``"ticker"`` key, so a reader tells them from quote frames with one key
lookup (``subscribed``, ``pong``, ``error``, and ``recovered`` at a resume). A bad
message gets an ``error`` frame whose ``code`` is one of :data:`ActionErrorCode` and
the connection stays open.

Everything here is pure: :func:`parse_action` turns text into an :class:`Action`,
:func:`apply_action` computes the new filter, the ``*_event`` functions encode
control frames (the caller passes the time), and :func:`answer` puts them together:
what every server (``quotes-server``, the scripted test server) does with one client
message, so they answer alike.

Every action is bounded in what it may cost the server: at most
:data:`~quotes_core.MAX_FILTER_TICKERS` tickers, a ``ping`` id of at most
:data:`MAX_PING_ID_BYTES` bytes, no deep nesting, and a
:attr:`Action.cost` in inbound-rate tokens that grows with its size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeVar

from quotes_core.errors import ActionError, InvalidTickers
from quotes_core.history import StreamItem
from quotes_core.schema import format_timestamp
from quotes_core.snapshot import Snapshot
from quotes_core.tickers import MAX_FILTER_TICKERS, TickerFilter, normalize_ticker

__all__ = [
    "MAX_PING_ID_BYTES",
    "TICKERS_PER_TOKEN",
    "Action",
    "ActionKind",
    "Reply",
    "answer",
    "apply_action",
    "error_event",
    "parse_action",
    "pong_event",
    "recovered_event",
    "subscribed_event",
    "with_position",
]

ActionKind = Literal["subscribe", "unsubscribe", "set", "ping"]
"""The actions a client may send."""

_KINDS: tuple[ActionKind, ...] = ("subscribe", "unsubscribe", "set", "ping")

P = TypeVar("P")

_ERROR_MESSAGE_LIMIT = 200

MAX_PING_ID_BYTES = 100
"""Longest ``id`` a ``ping`` may carry, in bytes of compact JSON (it is echoed in the pong)."""

TICKERS_PER_TOKEN = 50
"""An action weighs one inbound-rate token plus one per this many tickers it names."""


@dataclass(frozen=True, slots=True)
class Action:
    """
    One parsed client action.

    ``tickers`` is the normalised set for ``subscribe``/``unsubscribe``/``set``
    (``None`` means ``"*"``, every ticker); ``id`` is the ``ping`` id, echoed as
    given (any JSON value, ``None`` when absent).
    """

    kind: ActionKind
    tickers: frozenset[str] | None = None
    id: object = None
    named: int = 0
    """How many tickers the message named (before duplicates collapsed)."""

    @property
    def cost(self) -> int:
        """
        What the action weighs against the connection's inbound rate, in frames:
        1, plus 1 per :data:`TICKERS_PER_TOKEN` tickers it names (a 1,000-ticker
        ``set`` weighs 21), so a client cannot buy expensive work with cheap frames.
        """
        return 1 + self.named // TICKERS_PER_TOKEN


def parse_action(text: str) -> Action:
    """
    Parse a client's text message.

    Raises:
        ActionError: with ``code`` ``invalid_json`` (not JSON), ``invalid_message``
            (not an object, no string ``action``, ``tickers`` not a list of strings),
            ``unknown_action``, ``invalid_ticker`` or ``too_many_tickers``.
    """
    try:
        msg = json.loads(text)
    except ValueError:
        raise ActionError("invalid_json", "the message is not valid JSON") from None
    except RecursionError:  # deeply nested arrays or objects: no action looks like that
        raise ActionError("invalid_message", "the message is nested too deeply") from None
    if not isinstance(msg, dict):
        raise ActionError("invalid_message", "the message must be a JSON object")
    kind = msg.get("action")
    if not isinstance(kind, str):
        raise ActionError("invalid_message", 'the message needs a string "action"')
    if kind not in _KINDS:
        raise ActionError(
            "unknown_action",
            f"unknown action {kind[:40]!r}: expected one of {', '.join(_KINDS)}",
        )
    if kind == "ping":
        return Action("ping", id=_ping_id(msg.get("id")))
    raw = msg.get("tickers")
    return Action(kind, tickers=_tickers(raw), named=len(raw) if isinstance(raw, list) else 0)


def _ping_id(raw: object) -> object:
    try:
        size = len(_dumps(raw).encode())
    except RecursionError:
        size = MAX_PING_ID_BYTES + 1
    if size > MAX_PING_ID_BYTES:
        raise ActionError(
            "invalid_message", f'"id" is too long (at most {MAX_PING_ID_BYTES} bytes of JSON)'
        )
    return raw


def _tickers(raw: object) -> frozenset[str] | None:
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ActionError("invalid_message", '"tickers" must be a list of strings')
    if len(raw) > MAX_FILTER_TICKERS:
        raise ActionError(
            "too_many_tickers",
            f"too many tickers ({len(raw)}; at most {MAX_FILTER_TICKERS} per action)",
        )
    items: Sequence[str] = [t.strip() for t in raw]
    if "*" in items:
        return None
    try:
        return frozenset(normalize_ticker(t) for t in items if t)
    except InvalidTickers as exc:
        raise ActionError("invalid_ticker", str(exc)) from None


def apply_action(current: TickerFilter, action: Action) -> TickerFilter:
    """
    The filter after a ``subscribe``, ``unsubscribe`` or ``set`` action.

    ``unsubscribe`` of ``"*"`` leaves a filter of no tickers at all; removing single
    tickers from an every-ticker filter is refused (use ``set``).

    Raises:
        ActionError: ``too_many_tickers`` past :data:`~quotes_core.MAX_FILTER_TICKERS`,
            ``invalid_message`` for a ``ping`` or an impossible ``unsubscribe``.
    """
    have = current.tickers
    wanted = action.tickers
    if action.kind == "set":
        new = wanted
    elif action.kind == "subscribe":
        new = None if wanted is None or have is None else have | wanted
    elif action.kind == "unsubscribe":
        if wanted is None:
            new = frozenset()
        elif have is None:
            raise ActionError(
                "invalid_message",
                'cannot unsubscribe single tickers from "*": send a "set" action instead',
            )
        else:
            new = have - wanted
    else:
        raise ActionError("invalid_message", f"{action.kind!r} does not change the filter")
    if new is not None and len(new) > MAX_FILTER_TICKERS:
        raise ActionError(
            "too_many_tickers",
            f"too many tickers ({len(new)}; at most {MAX_FILTER_TICKERS} per connection)",
        )
    return TickerFilter(new)


@dataclass(frozen=True, slots=True)
class Reply(Generic[P]):
    """What a server does for one client message (see :func:`answer`)."""

    event: str
    """The control frame to send, after everything already pending for the client."""
    filter: TickerFilter | None = None
    """The client's new filter, or ``None`` when it does not change."""
    snapshot: list[StreamItem[P]] = field(default_factory=list)
    """The latest quotes of newly added tickers (``snapshot=1`` clients), sent right
    after :attr:`event` and before any live quote of those tickers."""
    error: ActionError | None = None
    """Why the message was refused, when :attr:`event` is an ``error`` frame."""


def answer(
    text: str,
    current: TickerFilter,
    *,
    now: datetime,
    grant: frozenset[str] | None = None,
    snapshot: Snapshot[P] | None = None,
    charge: Callable[[int], bool] | None = None,
) -> Reply[P] | None:
    """
    A server's answer to one client text message.

    Args:
        text: the message.
        current: the client's filter now.
        now: the server's clock (UTC), for ``pong``.
        grant: the tickers the client's token may subscribe to (``None``: any).
        snapshot: the latest quotes, for a client that asked for ``snapshot=1``
            (``None`` otherwise): newly added tickers get theirs.
        charge: weighs a valid action more than the one frame it came in (its
            :attr:`Action.cost` less one); returns False past the inbound rate.

    Returns:
        The reply, or ``None`` when ``charge`` refused the action: the connection is
        closing for its inbound rate, and the action must not be applied.
    """
    try:
        action = parse_action(text)
        if action.cost > 1 and charge is not None and not charge(action.cost - 1):
            return None
        if action.kind == "ping":
            return Reply(pong_event(action.id, now))
        new = apply_action(current, action)
        if grant is not None and (new.tickers is None or not new.tickers <= grant):
            raise ActionError("forbidden", "the token does not grant every requested ticker")
    except ActionError as exc:
        return Reply(error_event(exc), error=exc)
    old = current.tickers
    first: list[StreamItem[P]] = []
    if snapshot is not None and old is not None:
        if new.tickers is None:
            first = [i for i in snapshot.select(new) if i.ticker not in old]
        else:
            first = snapshot.select(new.tickers - old)
    return Reply(subscribed_event(new), new, first)


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def subscribed_event(ticker_filter: TickerFilter) -> str:
    """``{"event":"subscribed","tickers":[...sorted...]}`` (``"*"`` for every ticker)."""
    tickers = ticker_filter.tickers
    shown: object = "*" if tickers is None else sorted(tickers)
    return _dumps({"event": "subscribed", "tickers": shown})


def pong_event(ping_id: object, server_time: datetime) -> str:
    """``{"event":"pong","id":..,"server_time":"<ISO µs UTC>"}``."""
    return _dumps({"event": "pong", "id": ping_id, "server_time": format_timestamp(server_time)})


def error_event(error: ActionError) -> str:
    """``{"event":"error","code":"<machine-readable>","message":"<human>"}``."""
    message = str(error)[:_ERROR_MESSAGE_LIMIT]
    return _dumps({"event": "error", "code": error.code, "message": message})


def recovered_event(recovered: bool, epoch: str, seq: int) -> str:
    """
    ``{"event":"recovered","recovered":..,"epoch":..,"seq":..}``: sent at a resume,
    before the replay. ``epoch`` and ``seq`` are the stream's position at that moment:
    every quote after ``seq`` arrives live.
    """
    return _dumps({"event": "recovered", "recovered": recovered, "epoch": epoch, "seq": seq})


def with_position(payload: str, seq: int, epoch: str) -> str:
    """
    A canonical quote payload with ``"seq"`` and ``"epoch"`` appended after the
    contract's fields (the ``seq=1`` option). ``epoch`` must be JSON-safe (see
    :data:`~quotes_core.query.EPOCH_PATTERN`).
    """
    return f'{payload[:-1]},"seq":{seq},"epoch":"{epoch}"}}'
