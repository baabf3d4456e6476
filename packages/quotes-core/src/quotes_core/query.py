"""
The handshake's query parameters, parsed the same way by every server that speaks
the contract (``quotes-server`` and the scripted test server of ``quotes-client``).

Unknown parameters are ignored; a bad value raises a :class:`~quotes_core.ClientError`
whose message is the reason sent with the HTTP 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from quotes_core.errors import ClientError, InvalidTickers
from quotes_core.hub import Mode
from quotes_core.tickers import TickerFilter

__all__ = ["parse_mode_param", "parse_tickers_param"]


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
