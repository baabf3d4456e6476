"""
The opt-in stream protocol, client side: frames in, actions out. No I/O here.

A text frame from the server is one of:

* a quote (a JSON object with a ``"ticker"`` key), with ``"seq"`` and ``"epoch"``
  after the contract's fields when the connection asked ``seq=1``;
* a batch (``batch=1``): a JSON array of such quotes;
* a control frame: a JSON object with an ``"event"`` key and no ``"ticker"`` key
  (``subscribed``, ``recovered``, ``error``, ``pong``).

:func:`decode_frame` turns one frame into a list of :class:`Item` (quotes with
their position, control frames, or the :class:`~quotes_core.InvalidQuote` that
explains why an element was skipped). :func:`encode_action` builds the client's
messages (``subscribe``, ``unsubscribe``, ``set``, ``ping``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from quotes_client.events import Recovered, ServerError
from quotes_core import (
    MAX_HZ_RANGE,
    InvalidQuote,
    InvalidTickers,
    Position,
    Quote,
    StreamOptions,
    TickerFilter,
    validate_quote,
)
from quotes_core.query import STREAM_PARAMS

__all__ = [
    "MAX_HZ_RANGE",
    "Action",
    "Control",
    "Item",
    "OtherControl",
    "Pong",
    "ProtocolOptions",
    "Recovered",
    "ServerError",
    "Subscribed",
    "WireQuote",
    "decode_frame",
    "encode_action",
    "encode_ping",
]

Action = Literal["subscribe", "unsubscribe", "set"]
"""A filter change sent on the open connection."""


class WireQuote(NamedTuple):
    """A validated quote and its position in the server's stream (``seq=1`` only)."""

    quote: Quote
    seq: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``{"event":"subscribed"}``: the server's whole filter after an action."""

    filter: TickerFilter


@dataclass(frozen=True, slots=True)
class Pong:
    """``{"event":"pong"}``: the answer to a ``ping`` action."""

    id: object
    server_time: str | None


@dataclass(frozen=True, slots=True)
class OtherControl:
    """A control frame this client does not know (kept for the caller, never fatal)."""

    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


Control = Subscribed | Recovered | ServerError | Pong | OtherControl
"""Any control frame."""

Item = WireQuote | Control | InvalidQuote
"""What one frame (or one element of a batch) decodes to."""


class _Position(BaseModel):
    # the two fields seq=1 adds; anything else in the frame is the quote's business
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    seq: int | None = None
    epoch: str | None = None


_QUOTE_HEAD = b'{"ticker"'  # how every canonical quote frame starts
_QUOTES: TypeAdapter[list[Quote]] = TypeAdapter(list[Quote])
_POSITIONS: TypeAdapter[list[_Position]] = TypeAdapter(list[_Position])
_NO_POSITION = _Position()


def decode_frame(raw: bytes, with_seq: bool = False, batch: bool = False) -> list[Item]:
    """
    Decode one text frame (as bytes) into quotes, control frames and invalid items.

    Args:
        raw: the frame's payload.
        with_seq: read ``seq`` and ``epoch`` too (costs a second, small parse).
        batch: unpack JSON arrays (``batch=1``); without it an array is one
            invalid message, as in the contract's stream.
    """
    if raw.startswith(_QUOTE_HEAD):
        return [_quote(raw, with_seq)]
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return [_quote(raw, with_seq)]  # validate_quote says why, with the right reason
    if isinstance(obj, list) and batch:
        return _batch(raw, obj, with_seq)
    if isinstance(obj, dict) and "event" in obj and "ticker" not in obj:
        return [control(obj)]
    return [_quote(raw, with_seq)]


def _quote(raw: bytes | str, with_seq: bool) -> WireQuote | InvalidQuote:
    try:
        quote = validate_quote(raw)
    except InvalidQuote as exc:
        return exc
    if not with_seq:
        return WireQuote(quote)
    try:
        pos = _Position.model_validate_json(raw)
    except ValidationError:
        pos = _NO_POSITION  # a valid quote with a garbled position: keep the quote
    return WireQuote(quote, pos.seq, pos.epoch)


def _batch(raw: bytes, items: list[Any], with_seq: bool) -> list[Item]:
    try:
        quotes = _QUOTES.validate_json(raw)
    except ValidationError:
        # something in the array is not a quote: decide element by element
        return [_element(item, with_seq) for item in items]
    if not with_seq:
        return [WireQuote(q) for q in quotes]
    try:
        positions = _POSITIONS.validate_json(raw)
    except ValidationError:
        positions = [_NO_POSITION] * len(quotes)
    return [WireQuote(q, p.seq, p.epoch) for q, p in zip(quotes, positions, strict=True)]


def _element(item: Any, with_seq: bool) -> Item:
    if isinstance(item, dict) and "event" in item and "ticker" not in item:
        return control(item)
    # strict validation wants JSON input (timestamps as strings): re-encode this one
    return _quote(json.dumps(item, separators=(",", ":"), allow_nan=True), with_seq)


def control(obj: Mapping[str, Any]) -> Control:
    """The typed control frame of a decoded JSON object that has an ``"event"`` key."""
    event = obj.get("event")
    if event == "subscribed":
        tickers = obj.get("tickers")
        if tickers == "*" or (isinstance(tickers, list) and "*" in tickers):
            return Subscribed(TickerFilter())
        if isinstance(tickers, list) and all(isinstance(t, str) for t in tickers):
            if not tickers:  # no ticker at all (not "every ticker", as in a URL)
                return Subscribed(TickerFilter(frozenset()))
            try:
                return Subscribed(TickerFilter.of(tickers))
            except InvalidTickers:
                pass
    elif event == "recovered" and isinstance(obj.get("recovered"), bool):
        epoch, seq = obj.get("epoch"), obj.get("seq")
        return Recovered(
            obj["recovered"],
            epoch if isinstance(epoch, str) else None,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        )
    elif event == "error":
        return ServerError(str(obj.get("code", "unknown")), str(obj.get("message", "")))
    elif event == "pong":
        server_time = obj.get("server_time")
        return Pong(obj.get("id"), server_time if isinstance(server_time, str) else None)
    return OtherControl(str(event), dict(obj))


def encode_action(action: Action, tickers: Iterable[str] | None) -> str:
    """
    The text message of a filter change; ``tickers=None`` means every ticker (``["*"]``).
    """
    symbols = ["*"] if tickers is None else sorted(tickers)
    return json.dumps({"action": action, "tickers": symbols}, separators=(",", ":"))


def encode_ping(ping_id: int | str) -> str:
    """The text message of a ``ping`` action."""
    return json.dumps({"action": "ping", "id": ping_id}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ProtocolOptions:
    """
    The opt-in stream options of a client, and the query parameters they become.

    Attributes:
        snapshot: ask ``snapshot=1`` (the latest quote of each ticker first).
        max_hz: ask ``max_hz=N`` (at most N frames per second per ticker, conflated).
        batch: ask ``batch=1`` (one JSON array per flush).
        resume: ask ``seq=1`` and, on reconnects, ``since=<epoch>:<seq>`` plus
            ``snapshot=1`` (used only when the server cannot replay).

    Raises:
        ValueError: ``max_hz`` is outside :data:`MAX_HZ_RANGE`.
    """

    snapshot: bool = False
    max_hz: float | None = None
    batch: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        low, high = MAX_HZ_RANGE
        if self.max_hz is not None and not (low <= self.max_hz <= high):
            raise ValueError(f"max_hz must be between {low:g} and {high:g}, got {self.max_hz!r}")

    def params(self, since: str | None) -> dict[str, str]:
        """
        The query parameters of one connection (``since`` from the resume tracker),
        as :meth:`quotes_core.StreamOptions.to_query` spells them; a resuming client
        also asks ``snapshot=1`` (used only when the server cannot replay) and
        ``seq=1`` explicitly.
        """
        resumed = since is not None and self.resume
        options = StreamOptions(
            snapshot=self.snapshot or resumed,
            seq=self.resume,
            since=Position.parse(since) if resumed and since is not None else None,
            max_hz=self.max_hz,
            batch=self.batch,
        )
        query = options.to_query()
        if self.resume:
            query["seq"] = "1"
        return {name: query[name] for name in STREAM_PARAMS if name in query}
