"""
Build the stream URL: the server's address plus the ``tickers`` query parameter
(and the opt-in protocol's parameters, with :func:`with_params`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from quotes_core import TickerFilter

__all__ = ["stream_url", "with_params"]


def stream_url(url: str, tickers: Iterable[str] | str | None = None) -> str:
    """
    Return ``url`` with its ``tickers`` query parameter set from ``tickers``.

    Args:
        url: a ``ws://`` or ``wss://`` URL, or the ``http://``/``https://`` URL of the
            server's Server-Sent Events endpoint; other query parameters are kept.
        tickers: symbols (case-insensitive), a comma-separated string, or
            ``None`` to keep the URL as given (no ``tickers`` parameter means
            every ticker). ``"*"`` or an empty list also mean every ticker and
            remove the parameter.

    Raises:
        ValueError: ``url`` is not a ``ws://``, ``wss://``, ``http://`` or ``https://`` URL.
        quotes_core.InvalidTickers: a symbol is invalid, or there are too many.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError(
            f"not a stream URL (ws:// or wss://, or http(s):// for Server-Sent Events): {url!r}"
        )
    if tickers is None:
        return url
    symbols = tickers.split(",") if isinstance(tickers, str) else list(tickers)
    value = TickerFilter.of(symbols).to_query()
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "tickers"]
    if value is not None:
        query.append(("tickers", value))
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


def with_params(url: str, params: Mapping[str, str | None]) -> str:
    """
    Return ``url`` with each of ``params`` set (a ``None`` value removes it).

    Other query parameters keep their order; ``url`` comes back unchanged when
    ``params`` is empty.
    """
    if not params:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query, safe=",:*")))
