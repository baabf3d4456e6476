"""
The handshake's query parameters, parsed the same way by every server that speaks
the contract (``quotes-server`` and the scripted test server of ``quotes-client``).

Unknown parameters are ignored; a bad value raises a :class:`~quotes_core.ClientError`
whose message is the reason sent with the HTTP 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quotes_core.errors import ClientError, InvalidTickers
from quotes_core.hub import Mode
from quotes_core.throttle import MAX_HZ_RANGE
from quotes_core.tickers import TickerFilter

__all__ = [
    "EPOCH_PATTERN",
    "STREAM_PARAMS",
    "Position",
    "StreamOptions",
    "parse_mode_param",
    "parse_stream_options",
    "parse_tickers_param",
]

EPOCH_PATTERN = r"[A-Za-z0-9_-]{1,64}"
"""What an epoch looks like (so it needs no escaping in JSON or a query)."""

STREAM_PARAMS = ("snapshot", "seq", "since", "max_hz", "batch")
"""The stream protocol's query parameters (see :class:`StreamOptions`)."""

_EPOCH_RE = re.compile(EPOCH_PATTERN)
_TRUE = ("1", "true")
_FALSE = ("0", "false", "")


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a server's stream: ``<epoch>:<seq>`` on the wire."""

    epoch: str
    seq: int

    @classmethod
    def parse(cls, raw: str) -> Position:
        """
        Parse ``<epoch>:<seq>``.

        Raises:
            ClientError: not that shape, a bad epoch or a negative/non-integer seq.
        """
        epoch, sep, seq = raw.rpartition(":")
        if not sep or not _EPOCH_RE.fullmatch(epoch) or not seq.isascii() or not seq.isdigit():
            raise ClientError(
                f"invalid since {raw[:80]!r}: expected <epoch>:<seq> (epoch of "
                "1-64 characters A-Z a-z 0-9 _ -, seq a non-negative integer)"
            )
        return cls(epoch, int(seq))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """
    The stream protocol's opt-in query parameters; all off is the contract's stream.
    """

    snapshot: bool = False
    """``snapshot=1``: the latest quote of every matching ticker first."""
    seq: bool = False
    """``seq=1`` (also implied by ``since``): quote frames carry ``seq`` and ``epoch``."""
    since: Position | None = None
    """``since=<epoch>:<seq>``: resume after that position."""
    max_hz: float | None = None
    """``max_hz=N``: at most N frames per second per ticker, conflating in between."""
    batch: bool = False
    """``batch=1``: one JSON array text frame per flush."""

    @property
    def plain(self) -> bool:
        """True when no option is on (the contract's stream, byte for byte)."""
        return not (self.snapshot or self.seq or self.batch) and self.max_hz is None

    @property
    def sequenced(self) -> bool:
        """
        True when the client's live quotes need their stream position (``seq``,
        ``batch`` or ``max_hz``): a server routes them through its sequenced hub, the
        others (``snapshot=1`` alone included) through the hub of plain quotes.
        """
        return self.seq or self.batch or self.max_hz is not None

    def to_query(self) -> dict[str, str]:
        """The query parameters that give these options (for clients)."""
        out: dict[str, str] = {}
        if self.snapshot:
            out["snapshot"] = "1"
        if self.since is not None:
            out["since"] = str(self.since)
        elif self.seq:
            out["seq"] = "1"
        if self.max_hz is not None:
            out["max_hz"] = repr(self.max_hz)
        if self.batch:
            out["batch"] = "1"
        return out


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ClientError(f"give {name} once")
    return values[0]


def _flag(query: Mapping[str, Sequence[str]], name: str) -> bool:
    raw = _one(query, name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ClientError(f"invalid {name} {raw[:20]!r}: expected 1 or 0")


def parse_stream_options(query: Mapping[str, Sequence[str]]) -> StreamOptions:
    """
    The stream protocol's options from a query (every value of each parameter).

    Raises:
        ClientError: a value is invalid or a parameter is given twice; the message
            is the reason sent with the HTTP 400.
    """
    since_raw = _one(query, "since")
    since = Position.parse(since_raw) if since_raw is not None else None
    max_hz: float | None = None
    hz_raw = _one(query, "max_hz")
    if hz_raw is not None:
        low, high = MAX_HZ_RANGE
        try:
            max_hz = float(hz_raw)
        except ValueError:
            max_hz = math.nan
        if not low <= max_hz <= high:
            raise ClientError(
                f"invalid max_hz {hz_raw[:20]!r}: expected a number from {low:g} to {high:g}"
            )
    return StreamOptions(
        snapshot=_flag(query, "snapshot"),
        seq=_flag(query, "seq") or since is not None,
        since=since,
        max_hz=max_hz,
        batch=_flag(query, "batch"),
    )


def parse_tickers_param(values: Sequence[str]) -> TickerFilter:
    """
    The filter of the ``tickers`` parameter, given every value it has in the query.

    Raises:
        InvalidTickers: the parameter is given more than once, or its value is invalid.
    """
    if len(values) > 1:
        raise InvalidTickers("give tickers once, as a comma-separated list")
    return TickerFilter.parse(values[0] if values else None)


def parse_mode_param(raw: str | None) -> Mode:
    """
    The buffering mode of the ``mode`` parameter (omitted or empty: FIFO).

    Raises:
        ClientError: the value is not a :class:`~quotes_core.Mode`.
    """
    if raw is None or raw == "":
        return Mode.FIFO
    try:
        return Mode(raw.lower())
    except ValueError:
        raise ClientError(
            f"invalid mode {raw[:20]!r}: expected one of {', '.join(m.value for m in Mode)}"
        ) from None
